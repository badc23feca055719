//! A small HTTP/1.0 client for driving the real Bitpoll through its forms: a [`Session`]
//! keeps cookies (Django's `csrftoken` and `sessionid`) across requests and posts
//! url-encoded forms; [`tags`] reads the attributes of HTML tags (the CSRF token, a form's
//! radio buttons, the stylesheets and scripts a page names).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response with its raw body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path of a redirect's Location (scheme and host removed).
    pub fn location_path(&self) -> Option<String> {
        let loc = self.header("location")?;
        Some(match loc.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
            None => loc.to_string(),
        })
    }
}

/// One request to 127.0.0.1:`port`. `body` is (content type, bytes).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<(&str, &[u8])>,
) -> Reply {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((ctype, bytes)) = body {
        head.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    head.push_str("\r\n");
    let mut raw_req = head.into_bytes();
    if let Some((_, bytes)) = body {
        raw_req.extend_from_slice(bytes);
    }
    s.write_all(&raw_req)
        .unwrap_or_else(|e| panic!("send {method} {path}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the response to {method} {path}: {e}"));
    parse(&raw).unwrap_or_else(|| {
        panic!(
            "no HTTP response to {method} {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// `application/x-www-form-urlencoded` of `fields`, in order.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

/// A browser's cookie jar for one server.
#[derive(Debug)]
pub struct Session {
    pub port: u16,
    pub cookies: BTreeMap<String, String>,
}

impl Session {
    pub fn new(port: u16) -> Session {
        Session {
            port,
            cookies: BTreeMap::new(),
        }
    }

    fn send(&mut self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Reply {
        let mut headers = Vec::new();
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            headers.push(("Cookie".to_string(), jar.join("; ")));
        }
        let reply = request(self.port, method, path, &headers, body);
        for (k, v) in &reply.headers {
            if k != "set-cookie" {
                continue;
            }
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let (name, value) = (name.trim(), value.trim());
                if value.is_empty() || value == "\"\"" {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        reply
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, None)
    }

    /// POST `fields` url-encoded.
    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = form_encode(fields);
        self.send(
            "POST",
            path,
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
        )
    }

    /// GET `path`, expecting 200; its HTML.
    pub fn page(&mut self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.text()
    }
}

/// The attributes of every `<NAME ...>` tag in `html`, in order (values unescaped of
/// `&amp;` only; enough for names, tokens and URLs).
pub fn tags(html: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{name}");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if !after.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/') {
            rest = after;
            continue;
        }
        let end = after.find('>').unwrap_or(after.len());
        out.push(attributes(&after[..end]));
        rest = &after[end..];
    }
    out
}

fn attributes(mut s: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    loop {
        s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if s.is_empty() {
            return attrs;
        }
        let name_end = s
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
            .unwrap_or(s.len());
        let name = s[..name_end].to_ascii_lowercase();
        s = s[name_end..].trim_start();
        let value = if let Some(v) = s.strip_prefix('=') {
            let v = v.trim_start();
            if let Some(q @ ('"' | '\'')) = v.chars().next() {
                let body = &v[1..];
                let close = body.find(q).unwrap_or(body.len());
                s = body.get(close + 1..).unwrap_or("");
                body[..close].to_string()
            } else {
                let end = v.find(char::is_whitespace).unwrap_or(v.len());
                s = &v[end..];
                v[..end].to_string()
            }
        } else {
            String::new()
        };
        attrs.insert(name, value.replace("&amp;", "&"));
    }
}

/// The value of the first `<input name=NAME>` in `html`.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    tags(html, "input")
        .into_iter()
        .find(|a| a.get("name").is_some_and(|n| n == name))
        .and_then(|a| a.get("value").cloned())
}

/// The URLs under `prefix` that the page's stylesheets (`<link href>`) and scripts
/// (`<script src>`) name, in order, without duplicates.
pub fn assets(html: &str, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let links = tags(html, "link")
        .into_iter()
        .filter(|a| a.get("rel").is_some_and(|r| r == "stylesheet"))
        .filter_map(|a| a.get("href").cloned());
    let scripts = tags(html, "script")
        .into_iter()
        .filter_map(|a| a.get("src").cloned());
    for url in links.chain(scripts) {
        if url.starts_with(prefix) && !out.contains(&url) {
            out.push(url);
        }
    }
    out
}
