//! deploy/kubernetes/ against the real binary: the manifests parse and agree with each other,
//! the ConfigMap's pooler.toml passes `pgmux check`, the container's flags are flags pgmux has,
//! the probes' paths answer on a running pgmux, and the preStop command, run in the pgmux's own
//! PID namespace as in a pod, drains it. No Kubernetes cluster is needed.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use yaml_rust2::{Yaml, YamlLoader};

const DIR: &str = "deploy/kubernetes";
const DB: &str = "app";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(file: &str) -> Yaml {
    let path = repo().join(DIR).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{file}: one document per file");
    docs.remove(0)
}

/// Every manifest kustomization.yaml lists, by kind.
fn manifests() -> Vec<(String, Yaml)> {
    let kustomization = yaml("kustomization.yaml");
    let files = kustomization["resources"]
        .as_vec()
        .expect("kustomization.yaml: resources");
    files
        .iter()
        .map(|f| {
            let doc = yaml(f.as_str().expect("resources are file names"));
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{f:?}: no kind"))
                .to_owned();
            assert!(doc["apiVersion"].as_str().is_some(), "{f:?}: no apiVersion");
            assert!(doc["metadata"]["name"].as_str().is_some(), "{f:?}: no metadata.name");
            (kind, doc)
        })
        .collect()
}

fn kind(kind: &str) -> Yaml {
    let found: Vec<Yaml> = manifests()
        .into_iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in {DIR}");
    found.into_iter().next().unwrap()
}

fn container() -> Yaml {
    let containers = kind("Deployment")["spec"]["template"]["spec"]["containers"].clone();
    containers
        .as_vec()
        .and_then(|c| c.first().cloned())
        .expect("a container")
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_vec()
        .map(|items| items.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Every key of a `matchLabels`/`selector` map has the same value among the pod's labels.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let sel = selector.as_hash().expect("a label map");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels[k.as_str().unwrap_or_default()] == *v)
}

fn pooler_toml() -> toml::Table {
    let text = kind("ConfigMap")["data"]["pooler.toml"]
        .as_str()
        .expect("ConfigMap data pooler.toml")
        .to_owned();
    text.parse()
        .unwrap_or_else(|e| panic!("the ConfigMap's pooler.toml is not TOML: {e}"))
}

fn userlist() -> String {
    kind("Secret")["stringData"]["userlist.txt"]
        .as_str()
        .expect("Secret stringData userlist.txt")
        .to_owned()
}

fn toml_str<'a>(t: &'a toml::Table, section: &str, key: &str) -> &'a str {
    t.get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{section}.{key}"))
}

fn toml_int(t: &toml::Table, section: &str, key: &str) -> i64 {
    t.get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_integer())
        .unwrap_or_else(|| panic!("{section}.{key}"))
}

fn container_port(name: &str) -> i64 {
    container()["ports"]
        .as_vec()
        .and_then(|ports| ports.iter().find(|p| p["name"].as_str() == Some(name)))
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The probe's (path, port name).
fn probe(which: &str) -> (String, String) {
    let get = &container()[which]["httpGet"];
    let path = get["path"].as_str().unwrap_or_else(|| panic!("{which}.httpGet.path"));
    let port = get["port"]
        .as_str()
        .unwrap_or_else(|| panic!("{which}.httpGet.port by name"));
    (path.to_owned(), port.to_owned())
}

fn pre_stop() -> Vec<String> {
    strings(&container()["lifecycle"]["preStop"]["exec"]["command"])
}

#[test]
fn the_manifests_parse_and_agree_with_each_other() {
    let mut kinds: Vec<String> = manifests().into_iter().map(|(k, _)| k).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    );

    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"], labels));
    assert!(
        selects(&kind("Service")["spec"]["selector"], labels),
        "the Service selects the pods"
    );
    assert!(selects(
        &kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        labels
    ));

    // The Service forwards to the port pgmux listens on.
    let config = pooler_toml();
    let service_ports = kind("Service")["spec"]["ports"].clone();
    let target = service_ports.as_vec().and_then(|p| p.first()).expect("a Service port")["targetPort"].clone();
    assert_eq!(
        container_port(target.as_str().expect("targetPort by name")),
        toml_int(&config, "pooler", "listen_port")
    );
    // In a pod both listeners must take connections from outside the pod.
    assert_eq!(toml_str(&config, "pooler", "listen_addr"), "0.0.0.0");
    let metrics = toml_str(&config, "metrics", "listen");
    let metrics_port: i64 = metrics
        .strip_prefix("0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .expect("metrics on 0.0.0.0:PORT");
    assert_eq!(container_port("metrics"), metrics_port);

    // Prometheus scrapes each pod's metrics port and path.
    let notes = &pod["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        notes["prometheus.io/port"].as_str(),
        Some(metrics_port.to_string().as_str())
    );
    assert_eq!(notes["prometheus.io/path"].as_str(), Some("/metrics"));

    // The config file and the auth file are where the volumes put them.
    let args = strings(&container()["args"]);
    let config_path = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config FILE");
    let auth_path = toml_str(&config, "pooler", "auth_file");
    let volumes = pod["spec"]["volumes"].as_vec().expect("volumes").clone();
    let mounts = container()["volumeMounts"].as_vec().expect("volumeMounts").clone();
    let mounted = |source: &str, name_key: &str, object: &str, file: &str| {
        let volume = volumes.iter().find(|v| v[source][name_key].as_str() == Some(object));
        let volume = volume.unwrap_or_else(|| panic!("no {source} volume of {object}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .expect("the volume is mounted");
        let dir = mount["mountPath"].as_str().expect("mountPath");
        let path = Path::new(file);
        assert_eq!(path.parent(), Some(Path::new(dir)), "{file} is not in the mount {dir}");
        path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_owned()
    };
    let config_map = kind("ConfigMap");
    let name = config_map["metadata"]["name"].as_str().unwrap_or_default();
    let key = mounted("configMap", "name", name, config_path);
    assert!(
        config_map["data"][key.as_str()].as_str().is_some(),
        "the ConfigMap has {key}"
    );
    let secret = kind("Secret");
    let key = mounted(
        "secret",
        "secretName",
        secret["metadata"]["name"].as_str().unwrap_or_default(),
        auth_path,
    );
    assert!(
        secret["stringData"][key.as_str()].as_str().is_some(),
        "the Secret has {key}"
    );

    // Readiness follows the drain; liveness must not, or a draining pod would be restarted.
    assert_eq!(probe("readinessProbe"), ("/health".to_owned(), "metrics".to_owned()));
    assert_ne!(probe("livenessProbe").0, "/health");

    // The grace period covers the preStop's wait, shutdown_timeout and the goodbyes (1 s).
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    let script = pre_stop().last().cloned().unwrap_or_default();
    let sleep: i64 = script
        .split(';')
        .find_map(|s| s.trim().strip_prefix("sleep ")?.trim().parse().ok())
        .expect("the preStop starts with a sleep");
    let timeout = toml_int(&config, "pooler", "shutdown_timeout");
    assert!(
        grace > sleep + timeout + 1,
        "grace {grace} s <= {sleep} + {timeout} + 1"
    );
}

#[test]
fn the_container_runs_the_binary_with_flags_it_has() {
    let command = strings(&container()["command"]);
    assert_eq!(command, ["pgmux"]);
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("/usr/local/bin/pgmux"),
        "the image puts pgmux on PATH"
    );
    let (code, help, err) = run_cmd(env!("CARGO_BIN_EXE_pgmux"), &["--help"], &[], Duration::from_secs(10));
    assert_eq!(code, 0, "{err}");
    for flag in strings(&container()["args"]).iter().filter(|a| a.starts_with('-')) {
        let named = help.split(|c: char| c.is_whitespace() || c == ',').any(|w| w == flag);
        assert!(named, "pgmux --help has no {flag}:\n{help}");
    }
}

/// The ConfigMap's pooler.toml with the auth file in `dir` (the Secret's, or `users`) and,
/// for a running pgmux, the listen port `{port}`, metrics on `metrics_port`, and the database
/// on the test cluster.
fn local_config(dir: &Path, users: &str, running: Option<u16>) -> String {
    let mut config = pooler_toml();
    let auth = dir.join("userlist.txt");
    std::fs::write(&auth, users).unwrap();
    let pooler = config
        .get_mut("pooler")
        .and_then(|p| p.as_table_mut())
        .expect("[pooler]");
    pooler.insert("auth_file".into(), auth.to_str().unwrap().into());
    let Some(metrics_port) = running else {
        return toml::to_string(&config).unwrap();
    };
    pooler.insert("listen_port".into(), toml::Value::Integer(1));
    let metrics = config
        .get_mut("metrics")
        .and_then(|p| p.as_table_mut())
        .expect("[metrics]");
    metrics.insert("listen".into(), format!("0.0.0.0:{metrics_port}").into());
    let db = config
        .get_mut("databases")
        .and_then(|d| d.get_mut(DB))
        .and_then(|d| d.as_table_mut())
        .expect("[databases.app]");
    db.insert("host".into(), "127.0.0.1".into());
    db.insert("port".into(), toml::Value::Integer(cluster().port.into()));
    toml::to_string(&config)
        .unwrap()
        .replace("listen_port = 1\n", "listen_port = {port}\n")
}

/// The Secret's users, with app's password the test cluster's.
fn test_users() -> String {
    let users = userlist();
    assert!(users.lines().any(|l| l.starts_with("\"app\" ")), "the Secret lists app");
    users
        .lines()
        .map(|l| {
            if l.starts_with("\"app\" ") {
                "\"app\" \"app\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_config_map_passes_pgmux_check() {
    let dir = temp_dir("k8s-check");
    let path = dir.join("pooler.toml");
    std::fs::write(&path, local_config(&dir, &userlist(), None)).unwrap();
    let bin = env!("CARGO_BIN_EXE_pgmux");
    let (code, out, err) = run_cmd(
        bin,
        &["check", "--config", path.to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, 0, "pgmux check refuses the ConfigMap's pooler.toml:\n{out}{err}");
    assert!(!err.contains("note:"), "pgmux has notes on it:\n{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP/1.0 GET on 127.0.0.1: (status, body); None while nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_name_endpoints_pgmux_serves() {
    ensure_database(DB);
    let metrics_port = free_port();
    let dir = temp_dir("k8s-probes");
    let px = Pgmux::start_file("pooler.toml", &local_config(&dir, &test_users(), Some(metrics_port)));
    let client = connect(&px.url("app", "app", DB)).await;
    assert_eq!(value(&client, "SELECT 1").await, "1");
    for which in ["readinessProbe", "livenessProbe"] {
        let (path, _) = probe(which);
        let t0 = Instant::now();
        let answer = loop {
            match get(metrics_port, &path) {
                Some(answer) => break answer,
                None if t0.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(50)),
                None => panic!("nothing answers on the metrics port"),
            }
        };
        assert_eq!(answer.0, 200, "{which} GET {path}: {answer:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// pgmux as PID 1 of a PID namespace of its own, as in a pod (`unshare --pid --fork`).
struct PodPgmux {
    unshare: std::process::Child,
    pid: u32,
    port: u16,
    log: PathBuf,
}

impl PodPgmux {
    fn start(dir: &Path, config: &str) -> Result<PodPgmux, String> {
        let port = free_port();
        let path = dir.join("pooler.toml");
        std::fs::write(&path, config.replace("{port}", &port.to_string())).unwrap();
        let log = dir.join("pgmux.log");
        let out = std::fs::File::create(&log).unwrap();
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--"])
            .arg(env!("CARGO_BIN_EXE_pgmux"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let _ = std::fs::write(cluster().dir.join("pids").join(unshare.id().to_string()), "");
        let mut me = PodPgmux {
            pid: 0,
            unshare,
            port,
            log,
        };
        let t0 = Instant::now();
        let children = format!("/proc/{0}/task/{0}/children", me.unshare.id());
        while me.pid == 0 || TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = me.unshare.try_wait() {
                return Err(format!("exited with {status}: {}", me.log()));
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("not listening after 10 s: {}", me.log()));
            }
            let pid = std::fs::read_to_string(&children).unwrap_or_default();
            me.pid = pid.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::write(cluster().dir.join("pids").join(me.pid.to_string()), "");
        Ok(me)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PodPgmux {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_stop_command_drains_pgmux() {
    let (code, _, err) = run_cmd("unshare", &["--pid", "--fork", "true"], &[], Duration::from_secs(10));
    if code != 0 {
        eprintln!("skipped: no PID namespaces here (needs root): {err}");
        return;
    }
    ensure_database(DB);
    let metrics_port = free_port();
    let dir = temp_dir("k8s-prestop");
    let mut pod = PodPgmux::start(&dir, &local_config(&dir, &test_users(), Some(metrics_port)))
        .unwrap_or_else(|e| panic!("pgmux in a PID namespace: {e}"));
    let shutdown_timeout = Duration::from_secs(toml_int(&pooler_toml(), "pooler", "shutdown_timeout") as u64);
    let url = format!("host=127.0.0.1 port={} user=app password=app dbname={DB}", pod.port);
    assert_eq!(get(metrics_port, "/health").map(|a| a.0), Some(200));

    // A transaction that outlasts the preStop's first wait, and an idle client.
    let idle = connect(&url).await;
    let busy = connect(&url).await;
    busy.batch_execute("BEGIN").await.unwrap();
    let in_flight = tokio::spawn(async move {
        let slept = busy.simple_query("SELECT pg_sleep(8)").await.map(|_| ());
        (slept, busy.batch_execute("COMMIT").await)
    });

    // The preStop, as the kubelet runs it: inside the container's PID namespace.
    let command = pre_stop();
    let target = pod.pid.to_string();
    let mut argv = vec!["--target", &target, "--pid", "--"];
    argv.extend(command.iter().map(String::as_str));
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let hook = std::thread::spawn(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run_cmd("nsenter", &argv, &[], Duration::from_secs(60))
    });

    let t0 = Instant::now();
    while get(metrics_port, "/health").map(|a| a.0) != Some(503) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "/health never turned 503:\n{}",
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let draining = Instant::now();
    assert!(!in_flight.is_finished(), "the transaction should still be running");
    // New logins are refused: the listener is closed.
    while TcpStream::connect(("127.0.0.1", pod.port)).is_ok() {
        assert!(draining.elapsed() < Duration::from_secs(2), "the listener stays open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The idle client is told at once (SIGTERM's drain) ...
    let err = idle
        .simple_query("SELECT 1")
        .await
        .expect_err("the idle client is refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err:?}");
    // ... the transaction in flight finishes ...
    let (slept, committed) = in_flight.await.unwrap();
    slept.expect("the transaction's query finishes");
    committed.expect("its COMMIT succeeds");
    // ... and pgmux exits 0 within shutdown_timeout.
    let status = loop {
        if let Some(status) = pod.unshare.try_wait().unwrap() {
            break status;
        }
        assert!(
            draining.elapsed() < shutdown_timeout,
            "still running after shutdown_timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", pod.log());
    assert!(
        pod.log().contains("every transaction in flight has finished"),
        "{}",
        pod.log()
    );
    // The hook ends with the container (its shell is killed with PID 1), not by its timeout.
    let (code, _, err) = hook.join().unwrap();
    assert_ne!(code, 124, "the preStop hook ran on: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
