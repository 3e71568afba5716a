//! The shipped docker-compose.yml, Dockerfile and docker/pooler.toml agree
//! with each other. No Docker engine is needed: the files are parsed and
//! cross-checked (services, ports, mounts, the config pgmux is given).

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn compose() -> Yaml {
    let text = read("docker-compose.yml");
    let mut docs =
        YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "docker-compose.yml must hold one YAML document");
    docs.remove(0)
}

fn service<'a>(doc: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &doc["services"][name];
    assert!(s.is_hash(), "docker-compose.yml has no service `{name}`");
    s
}

/// Strings of a list that may also be written as a single scalar.
fn strings(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Host ports a service publishes, from the short ("6432:6432",
/// "127.0.0.1:6432:6432/tcp") or the long (`published: 6432`) syntax.
fn published_ports(svc: &Yaml) -> Vec<u16> {
    let Yaml::Array(ports) = &svc["ports"] else {
        return Vec::new();
    };
    ports
        .iter()
        .filter_map(|p| match p {
            Yaml::Hash(_) => scalar(&p["published"]),
            other => {
                let s = scalar(other)?;
                let s = s.split('/').next().unwrap_or_default().to_string();
                let parts: Vec<&str> = s.split(':').collect();
                // "HOST:CONTAINER" or "IP:HOST:CONTAINER"; a bare "CONTAINER" publishes
                // on a random host port, which is not what users are told to use.
                (parts.len() >= 2).then(|| parts[parts.len() - 2].to_string())
            }
        })
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Services named in depends_on, in its list or its map form.
fn depends_on(svc: &Yaml) -> Vec<String> {
    match &svc["depends_on"] {
        Yaml::Hash(map) => map.keys().filter_map(scalar).collect(),
        other => strings(other),
    }
}

/// (source, target) of each bind mount written as "./SRC:TARGET[:ro]" or in
/// the long form with `type: bind`.
fn bind_mounts(svc: &Yaml) -> Vec<(String, String)> {
    let Yaml::Array(vols) = &svc["volumes"] else {
        return Vec::new();
    };
    vols.iter()
        .filter_map(|v| match v {
            Yaml::Hash(_) => {
                let bind = v["type"].as_str() == Some("bind");
                bind.then(|| Some((scalar(&v["source"])?, scalar(&v["target"])?)))
                    .flatten()
            }
            other => {
                let s = scalar(other)?;
                let mut parts = s.splitn(3, ':');
                let (src, dst) = (parts.next()?, parts.next()?);
                (src.starts_with("./") || src.starts_with("../")).then(|| (src.to_string(), dst.to_string()))
            }
        })
        .collect()
}

fn pgmux_config_path(doc: &Yaml) -> (PathBuf, String) {
    let mounts = bind_mounts(service(doc, "pgmux"));
    let (src, dst) = mounts
        .iter()
        .find(|(_, dst)| dst.ends_with(".toml"))
        .unwrap_or_else(|| panic!("service pgmux mounts no .toml config file: {mounts:?}"));
    (repo().join(src.trim_start_matches("./")), dst.clone())
}

fn pooler_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()))
}

#[test]
fn compose_has_the_four_services() {
    let doc = compose();
    for name in ["primary", "replica", "pgmux", "pgbench"] {
        service(&doc, name);
    }
}

#[test]
fn compose_publishes_the_documented_ports() {
    let doc = compose();
    let pgmux = published_ports(service(&doc, "pgmux"));
    assert!(pgmux.contains(&6432), "pgmux must publish 6432, publishes {pgmux:?}");
    assert!(
        pgmux.contains(&9930),
        "pgmux must publish its metrics on 9930, publishes {pgmux:?}"
    );
    let primary = published_ports(service(&doc, "primary"));
    assert!(
        primary.contains(&5432),
        "primary must publish 5432, publishes {primary:?}"
    );
}

#[test]
fn compose_dependencies_and_profiles() {
    let doc = compose();
    let replica = depends_on(service(&doc, "replica"));
    assert!(
        replica.iter().any(|d| d == "primary"),
        "replica must depend on primary: {replica:?}"
    );
    let pgmux = depends_on(service(&doc, "pgmux"));
    assert!(
        pgmux.iter().any(|d| d == "primary"),
        "pgmux must depend on primary: {pgmux:?}"
    );
    let profiles = strings(&service(&doc, "pgbench")["profiles"]);
    assert!(
        !profiles.is_empty(),
        "pgbench must sit behind a profile so that `docker compose up` does not start it"
    );
}

#[test]
fn compose_bind_mounts_exist_in_the_repo() {
    let doc = compose();
    let Yaml::Hash(services) = &doc["services"] else {
        panic!("docker-compose.yml has no services map");
    };
    for (name, svc) in services {
        for (src, _) in bind_mounts(svc) {
            let path = repo().join(src.trim_start_matches("./"));
            assert!(
                path.exists(),
                "service {name:?} mounts {src}, which is not in the repository"
            );
        }
    }
}

#[test]
fn pgmux_config_mount_is_a_valid_pooler_toml() {
    let doc = compose();
    let (path, target) = pgmux_config_path(&doc);
    assert!(path.is_file(), "{} (mounted by pgmux) is missing", path.display());
    // pgmux's own loader accepts it (every key known, every value valid) ...
    if let Err(e) = pgmux::config::Config::load(&path) {
        panic!("pgmux rejects the config compose mounts: {e}");
    }
    // ... and it says what the compose file expects.
    let cfg = pooler_toml(&path);
    let pooler = cfg.get("pooler").and_then(|v| v.as_table()).expect("[pooler] section");
    let bench = cfg
        .get("databases")
        .and_then(|d| d.get("bench"))
        .and_then(|v| v.as_table())
        .expect("[databases.bench] section");

    // Inside a container pgmux must listen on every interface to be reachable.
    assert_eq!(pooler.get("listen_addr").and_then(|v| v.as_str()), Some("0.0.0.0"));
    if let Some(port) = pooler.get("listen_port") {
        assert_eq!(
            port.as_integer(),
            Some(6432),
            "listen_port must match the published 6432"
        );
    }
    let metrics = cfg
        .get("metrics")
        .and_then(|m| m.get("listen"))
        .and_then(|v| v.as_str());
    assert_eq!(
        metrics,
        Some("0.0.0.0:9930"),
        "[metrics] listen must match the published 9930"
    );

    // Backends are addressed by compose service name.
    let host = bench
        .get("host")
        .and_then(|v| v.as_str())
        .expect("databases.bench.host");
    service(&doc, host);
    let replicas: Vec<&str> = bench
        .get("replicas")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        !replicas.is_empty(),
        "databases.bench.replicas should list the replica service"
    );
    for r in replicas {
        service(&doc, r.split(':').next().unwrap_or(r));
    }

    // The image's entrypoint reads the file where compose mounts it.
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&target),
        "Dockerfile does not mention {target}, where compose mounts the config"
    );
}

#[test]
fn dockerfile_builds_pgmux() {
    let doc = compose();
    let build = &service(&doc, "pgmux")["build"];
    let (context, dockerfile) = match build {
        Yaml::Hash(_) => (
            build["context"].as_str().unwrap_or(".").to_string(),
            build["dockerfile"].as_str().unwrap_or("Dockerfile").to_string(),
        ),
        other => (
            scalar(other).expect("pgmux must be built from this repository"),
            "Dockerfile".into(),
        ),
    };
    let path = repo().join(context).join(dockerfile);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("pgmux's Dockerfile {}: {e}", path.display()));
    assert!(
        text.contains("cargo build --release"),
        "the Dockerfile must build pgmux in release mode"
    );
    assert!(text.contains("EXPOSE"), "the Dockerfile must EXPOSE pgmux's ports");
    assert!(text.contains("USER "), "the image must not run pgmux as root");
}
