//! HTTP(S) as a browser does it, with curl: a cookie jar, the CA of the front's
//! self-signed certificate, a name resolved to the published port on 127.0.0.1.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub location: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client of one site.
pub struct Client {
    /// `https://NAME:PORT` or `http://ADDRESS:PORT`.
    pub base: String,
    args: Vec<String>,
    jar: PathBuf,
    scratch: PathBuf,
}

impl Client {
    /// `https://host:port` on 127.0.0.1, trusting `cacert` only; cookies in `dir`.
    pub fn https(host: &str, port: u16, cacert: &Path, dir: &Path) -> Client {
        Client::new(
            format!("https://{host}:{port}"),
            vec![
                "--cacert".into(),
                cacert.display().to_string(),
                "--resolve".into(),
                format!("{host}:{port}:127.0.0.1"),
            ],
            dir,
        )
    }

    /// `http://address:port` with the given Host header.
    pub fn http(address: &str, port: u16, host: &str, dir: &Path) -> Client {
        Client::new(
            format!("http://{address}:{port}"),
            vec!["-H".into(), format!("Host: {host}")],
            dir,
        )
    }

    fn new(base: String, args: Vec<String>, dir: &Path) -> Client {
        fs::create_dir_all(dir).expect("mkdir the client's directory");
        let jar = dir.join("cookies");
        let _ = fs::remove_file(&jar);
        Client {
            base,
            args,
            jar,
            scratch: dir.join("body"),
        }
    }

    fn curl(&self, extra: &[String], path: &str) -> Answer {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-o"])
            .arg(&self.scratch)
            .args(["-w", "%{http_code}\n%{content_type}\n%{redirect_url}\n"])
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .args(&self.args)
            .args(extra)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("run curl");
        let meta = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = meta.lines();
        let status = lines.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = fs::read(&self.scratch).unwrap_or_default();
        let _ = fs::remove_file(&self.scratch);
        Answer {
            status,
            content_type: lines.next().unwrap_or_default().to_owned(),
            location: lines.next().unwrap_or_default().to_owned(),
            body,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.curl(&[], path)
    }

    /// A form POST as the browser sends it from `referer_path` of this site: the Origin
    /// and Referer headers and the fields, url-encoded.
    pub fn post(&self, path: &str, referer_path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut extra = vec![
            "-X".to_owned(),
            "POST".to_owned(),
            "-H".to_owned(),
            format!("Origin: {}", self.base),
            "-H".to_owned(),
            format!("Referer: {}{referer_path}", self.base),
        ];
        for (k, v) in fields {
            extra.push("--data-urlencode".into());
            extra.push(format!("{k}={v}"));
        }
        self.curl(&extra, path)
    }

    /// The jar holds a cookie of this name.
    pub fn has_cookie(&self, name: &str) -> bool {
        fs::read_to_string(&self.jar)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split('\t').nth(5) == Some(name))
    }
}

/// The value of the hidden `csrfmiddlewaretoken` input of a Django form page.
pub fn csrf_token(html: &str) -> String {
    let at = html
        .find("name=\"csrfmiddlewaretoken\"")
        .unwrap_or_else(|| panic!("no CSRF token in the page:\n{html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").expect("the token's value") + "value=\"".len();
    rest[v..]
        .split('"')
        .next()
        .expect("a quoted value")
        .to_owned()
}

/// The stylesheets a page links (`href="/static/....css"`).
pub fn stylesheets(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|h| h.starts_with("/static/") && h.ends_with(".css"))
        .map(str::to_owned)
        .collect()
}
