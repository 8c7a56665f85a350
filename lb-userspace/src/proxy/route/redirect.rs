//! The `Location` of a redirect action, as ALB builds it: each URL part is a
//! template in which `#{protocol}`, `#{host}`, `#{port}`, `#{path}` and
//! `#{query}` stand for the parts of the request as received.

use std::fmt::Write as _;
use std::net::Ipv6Addr;

use http::StatusCode;

use crate::config::model::RedirectStatus;
use crate::proxy::route::router::strip_port;

/// The parts of the received request that templates may refer to.
#[derive(Debug, Clone, Copy)]
pub struct RedirectInput<'a> {
    /// `"http"` or `"https"`, as received.
    pub protocol: &'a str,
    /// Without the port (a `:port` suffix is dropped defensively); an IPv6
    /// literal with or without brackets.
    pub host: &'a str,
    /// The listener port the request arrived on.
    pub port: u16,
    /// With its leading `/`.
    pub path: &'a str,
    /// Without the leading `?`.
    pub query: Option<&'a str>,
}

/// Builds the absolute `Location` URL from the action's templates (the
/// config loader has already defaulted absent parts to their placeholder).
///
/// The protocol is lowercased; the port is omitted when it is the default for
/// the resulting protocol; `?query` is added only when non-empty; an IPv6 host
/// is bracketed. When the request had no query, `&` left dangling at either
/// end of the query by an empty `#{query}` (as in `#{query}&v=1`) is dropped.
pub fn location(
    protocol_t: &str,
    host_t: &str,
    port_t: &str,
    path_t: &str,
    query_t: &str,
    req: &RedirectInput,
) -> String {
    let port = req.port.to_string();
    let vars = Vars {
        protocol: req.protocol,
        host: strip_port(req.host),
        port: &port,
        path: req.path.strip_prefix('/').unwrap_or(req.path),
        query: req.query.unwrap_or(""),
    };

    let protocol = vars.expand(protocol_t).to_ascii_lowercase();
    let host = vars.expand(host_t);
    let port = vars.expand(port_t);
    let path = vars.expand(path_t);
    let query = vars.expand(query_t);
    let query = if vars.query.is_empty() {
        query.trim_matches('&')
    } else {
        query.as_str()
    };

    let mut out = String::with_capacity(
        protocol.len() + host.len() + port.len() + path.len() + query.len() + 8,
    );
    out.push_str(&protocol);
    out.push_str("://");
    if host.parse::<Ipv6Addr>().is_ok() {
        let _ = write!(out, "[{host}]");
    } else {
        out.push_str(&host);
    }
    let default_port = match protocol.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    if !port.is_empty() && port.parse::<u16>().ok() != default_port {
        out.push(':');
        out.push_str(&port);
    }
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(&path);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The response status of a redirect action.
pub fn status(s: RedirectStatus) -> StatusCode {
    match s {
        RedirectStatus::Http301 => StatusCode::MOVED_PERMANENTLY,
        RedirectStatus::Http302 => StatusCode::FOUND,
    }
}

/// Values of the `#{...}` keywords for one request.
struct Vars<'a> {
    protocol: &'a str,
    host: &'a str,
    port: &'a str,
    /// Without its leading `/`.
    path: &'a str,
    query: &'a str,
}

impl Vars<'_> {
    /// Substitutes every known keyword in one pass, so text coming from the
    /// request is never itself expanded; unknown `#{...}` stays literal.
    fn expand(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(start) = rest.find("#{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let value = after.find('}').and_then(|end| {
                let v = match &after[..end] {
                    "protocol" => self.protocol,
                    "host" => self.host,
                    "port" => self.port,
                    "path" => self.path,
                    "query" => self.query,
                    _ => return None,
                };
                Some((v, end))
            });
            match value {
                Some((v, end)) => {
                    out.push_str(v);
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str("#{");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        protocol: &'a str,
        host: &'a str,
        port: u16,
        path: &'a str,
        query: Option<&'a str>,
    ) -> RedirectInput<'a> {
        RedirectInput {
            protocol,
            host,
            port,
            path,
            query,
        }
    }

    /// The loader's defaults for every part.
    const D: [&str; 5] = ["#{protocol}", "#{host}", "#{port}", "/#{path}", "#{query}"];

    fn loc(t: [&str; 5], req: &RedirectInput) -> String {
        location(t[0], t[1], t[2], t[3], t[4], req)
    }

    #[test]
    fn canonical_http_to_https() {
        let t = ["HTTPS", "#{host}", "443", "/#{path}", "#{query}"];
        let req = input("http", "example.com", 80, "/a/b", Some("x=1&y=2"));
        assert_eq!(loc(t, &req), "https://example.com/a/b?x=1&y=2");
        let req = input("http", "example.com", 80, "/", None);
        assert_eq!(loc(t, &req), "https://example.com/");
        let req = input("http", "example.com", 80, "/a", Some(""));
        assert_eq!(loc(t, &req), "https://example.com/a");
    }

    #[test]
    fn identity_templates_keep_the_request() {
        let req = input("http", "example.com", 8080, "/p", Some("q"));
        assert_eq!(loc(D, &req), "http://example.com:8080/p?q");
        let req = input("https", "example.com", 443, "/p", None);
        assert_eq!(loc(D, &req), "https://example.com/p");
        let req = input("http", "example.com", 80, "/p", None);
        assert_eq!(loc(D, &req), "http://example.com/p");
    }

    #[test]
    fn default_port_depends_on_resulting_protocol() {
        // 443 is kept on http, 80 is kept on https.
        let req = input("https", "h.example", 443, "/", None);
        assert_eq!(
            loc(["HTTP", "#{host}", "#{port}", "/#{path}", "#{query}"], &req),
            "http://h.example:443/"
        );
        let req = input("http", "h.example", 80, "/", None);
        assert_eq!(
            loc(
                ["HTTPS", "#{host}", "#{port}", "/#{path}", "#{query}"],
                &req
            ),
            "https://h.example:80/"
        );
        assert_eq!(
            loc(["HTTPS", "#{host}", "8443", "/#{path}", "#{query}"], &req),
            "https://h.example:8443/"
        );
        assert_eq!(
            loc(
                ["#{protocol}", "#{host}", "80", "/#{path}", "#{query}"],
                &req
            ),
            "http://h.example/"
        );
    }

    #[test]
    fn path_placeholder_drops_its_leading_slash() {
        let req = input("http", "h.example", 80, "/old/page", None);
        assert_eq!(
            loc(
                ["HTTPS", "#{host}", "#{port}", "/new/#{path}", "#{query}"],
                &req
            ),
            "https://h.example:80/new/old/page"
        );
        assert_eq!(
            loc(
                ["#{protocol}", "#{host}", "#{port}", "/#{path}", "#{query}"],
                &req
            ),
            "http://h.example/old/page"
        );
        assert_eq!(
            loc(
                [
                    "#{protocol}",
                    "other.example",
                    "#{port}",
                    "/fixed",
                    "#{query}"
                ],
                &req
            ),
            "http://other.example/fixed"
        );
        // Root path: "/#{path}" stays "/".
        let req = input("http", "h.example", 80, "/", None);
        assert_eq!(
            loc(
                [
                    "#{protocol}",
                    "new.example",
                    "#{port}",
                    "/#{path}",
                    "#{query}"
                ],
                &req
            ),
            "http://new.example/"
        );
        // Host and port may appear in the path.
        let req = input("http", "h.example", 81, "/x", None);
        assert_eq!(
            loc(
                [
                    "#{protocol}",
                    "new.example",
                    "#{port}",
                    "/#{host}/#{port}/#{path}",
                    ""
                ],
                &req
            ),
            "http://new.example:81/h.example/81/x"
        );
        // A path that was not origin-form still yields an absolute path.
        let req = input("http", "h.example", 80, "*", None);
        assert_eq!(
            loc(
                ["#{protocol}", "new.example", "#{port}", "#{path}", ""],
                &req
            ),
            "http://new.example/*"
        );
    }

    #[test]
    fn query_combinations() {
        let t = |q| ["HTTPS", "#{host}", "#{port}", "/#{path}", q];
        let with = input("http", "h.example", 443, "/p", Some("a=1"));
        let without = input("http", "h.example", 443, "/p", None);
        assert_eq!(loc(t("#{query}&v=1"), &with), "https://h.example/p?a=1&v=1");
        assert_eq!(loc(t("#{query}&v=1"), &without), "https://h.example/p?v=1");
        assert_eq!(loc(t("v=1&#{query}"), &without), "https://h.example/p?v=1");
        assert_eq!(loc(t("v=1"), &with), "https://h.example/p?v=1");
        assert_eq!(loc(t(""), &with), "https://h.example/p");
        assert_eq!(loc(t("#{query}"), &without), "https://h.example/p");
        assert_eq!(
            loc(t("from=#{host}:#{port}#{path}"), &with),
            "https://h.example/p?from=h.example:443p"
        );
        // The request's own query is kept verbatim, `&` included.
        let odd = input("http", "h.example", 443, "/p", Some("a=1&"));
        assert_eq!(loc(t("#{query}"), &odd), "https://h.example/p?a=1&");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let req = input("http", "::1", 8080, "/", None);
        assert_eq!(loc(D, &req), "http://[::1]:8080/");
        let req = input("http", "[2001:db8::1]", 80, "/", None);
        assert_eq!(loc(D, &req), "http://[2001:db8::1]/");
        let req = input("http", "[2001:db8::1]:8080", 80, "/", None);
        assert_eq!(loc(D, &req), "http://[2001:db8::1]/");
        // Not IPv6: never bracketed; a stray port is dropped, not doubled.
        let req = input("http", "h.example:8080", 80, "/", None);
        assert_eq!(loc(D, &req), "http://h.example/");
    }

    #[test]
    fn request_text_is_not_reexpanded_and_unknown_keywords_stay() {
        let req = input("http", "h.example", 80, "/#{host}", Some("#{port}"));
        assert_eq!(
            loc(
                ["HTTPS", "#{host}", "#{port}", "/#{path}", "#{query}"],
                &req
            ),
            "https://h.example:80/#{host}?#{port}"
        );
        let req = input("http", "h.example", 80, "/", None);
        assert_eq!(
            loc(["HTTPS", "#{host}", "443", "/#{nope}/#{", ""], &req),
            "https://h.example/#{nope}/#{"
        );
    }

    #[test]
    fn status_codes() {
        assert_eq!(
            status(RedirectStatus::Http301),
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(status(RedirectStatus::Http302), StatusCode::FOUND);
    }
}
