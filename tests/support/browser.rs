//! Debian's chromium, headless, as the dashboard's reader: `load` runs the page's scripts for a
//! budget of virtual time (fetches still take real time), then gives the DOM as the scripts
//! left it and every console message; optionally a screenshot. Installed by
//! scripts/browser-setup.sh; `chromium()` is None without it.
use super::{run_cmd, temp_dir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The chromium binary, if installed.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// A row's cells by their data-k: (data-v, the text shown).
pub type Cells = HashMap<String, (String, String)>;

/// What a page load left.
pub struct Page {
    pub dom: String,
    /// Console messages (any level: the dashboard logs nothing when all is well).
    pub console: Vec<String>,
}

/// Loads `url`, runs its scripts for `budget` of virtual time, and saves a screenshot of
/// `size` (width, height) to `screenshot` when given. Panics if chromium fails or hangs (60 s).
pub fn load(url: &str, budget: Duration, size: (u32, u32), screenshot: Option<&Path>) -> Page {
    let chromium = chromium().expect("chromium installed");
    let profile = temp_dir("chromium");
    let mut args = vec![
        "--headless".to_owned(),
        // Tests run as root, where chromium's sandbox refuses to start.
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--no-first-run".to_owned(),
        "--enable-logging=stderr".to_owned(),
        "--v=0".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        format!("--virtual-time-budget={}", budget.as_millis()),
        format!("--window-size={},{}", size.0, size.1),
    ];
    if let Some(path) = screenshot {
        args.push(format!("--screenshot={}", path.display()));
    }
    args.push("--dump-dom".to_owned());
    args.push(url.to_owned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, dom, err) = run_cmd(chromium.to_str().unwrap(), &argv, &[], Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!(code, 0, "chromium exited with {code}:\n{err}");
    assert!(dom.contains("</html>"), "no DOM from chromium:\n{dom}\n{err}");
    let console = err
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    Page { dom, console }
}

/// The value of attribute `name` in the start tag `tag` (as chromium serialises it).
pub fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let at = tag.find(&needle)? + needle.len();
    let end = tag[at..].find('"')? + at;
    Some(unescape(&tag[at..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

impl Page {
    /// The start tag of the element with `id`.
    pub fn tag_of(&self, id: &str) -> Option<String> {
        let at = self.dom.find(&format!(" id=\"{id}\""))?;
        let start = self.dom[..at].rfind('<')?;
        let end = self.dom[at..].find('>')? + at;
        Some(self.dom[start..=end].to_owned())
    }

    /// The table rows whose `data-{attr}` is set: (its value, its cells).
    pub fn rows(&self, attr_name: &str) -> Vec<(String, Cells)> {
        let marker = format!("<tr data-{attr_name}=\"");
        let mut out = Vec::new();
        let mut rest = self.dom.as_str();
        while let Some(at) = rest.find(&marker) {
            rest = &rest[at..];
            let end = rest.find("</tr>").unwrap_or(rest.len());
            let row = &rest[..end];
            let tag_end = row.find('>').unwrap_or(row.len());
            let key = attr(&row[..tag_end], &format!("data-{attr_name}")).unwrap_or_default();
            let mut cells = HashMap::new();
            for td in row.split("<td").skip(1) {
                let close = td.find('>').unwrap_or(td.len());
                let tag = &td[..close];
                let (Some(k), Some(v)) = (attr(tag, "data-k"), attr(tag, "data-v")) else {
                    continue;
                };
                let inner = td[close.min(td.len())..].trim_start_matches('>');
                let text = inner.split("</td>").next().unwrap_or_default();
                cells.insert(k, (v, strip_tags(text)));
            }
            out.push((key, cells));
            rest = &rest[end..];
        }
        out
    }
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
}
