//! `[[security_group]]`: CIDRs, ports and protocols of ingress rules.

use super::*;

#[test]
fn bad_cidr() {
    let text = base_with("source = \"0.0.0.0/0\"", "source = \"0.0.0.0/33\"");
    assert_error(
        &text,
        "0.0.0.0/33",
        "security_group[0].ingress[0].source",
        &["invalid CIDR \"0.0.0.0/33\"", "e.g. \"10.0.0.0/16\""],
    );
    let text = base_with("source = \"0.0.0.0/0\"", "source = \"10.1.2.3\"");
    assert_error(
        &text,
        "10.1.2.3",
        "security_group[0].ingress[0].source",
        &["needs a prefix length", "\"10.1.2.3/32\""],
    );
    let text = base_with("source = \"0.0.0.0/0\"", "source = \"2001:db8::1\"");
    assert_error(
        &text,
        "2001:db8::1",
        "security_group[0].ingress[0].source",
        &["\"2001:db8::1/128\""],
    );
}

#[test]
fn bad_ports() {
    for (ports, expect) in [
        ("\"90-80\"", "invalid port range \"90-80\": the first port must not exceed the second, e.g. \"80-90\""),
        ("\"0\"", "invalid ports \"0\": expected a port \"80\" or a range \"8000-8100\", ports 1-65535"),
        ("\"70000\"", "invalid ports \"70000\""),
        ("\"80-\"", "invalid ports \"80-\""),
        ("\"http\"", "invalid ports \"http\""),
        ("0", "invalid port 0"),
    ] {
        let text = base_with("ports = \"80\"", &format!("ports = {ports}"));
        assert_error(&text, &format!("ports = {ports}"), "security_group[0].ingress[0].ports", &[expect]);
    }
}

#[test]
fn ports_required_for_tcp_and_udp() {
    let text = base_with(
        "{ protocol = \"tcp\", ports = \"80\",",
        "{ protocol = \"udp\",",
    );
    assert_error(
        &text,
        "protocol = \"udp\"",
        "security_group[0].ingress[0].ports",
        &["ports is required for udp rules", "\"8000-8100\""],
    );
}

#[test]
fn ports_absent_for_icmp_and_all() {
    for proto in ["icmp", "icmpv6", "all"] {
        let text = base_with("protocol = \"tcp\"", &format!("protocol = \"{proto}\""));
        assert_error(
            &text,
            "ports = \"80\"",
            "security_group[0].ingress[0].ports",
            &[
                &format!("ports must be absent for {proto} rules"),
                "tcp and udp only",
            ],
        );
    }
}

#[test]
fn unknown_protocol() {
    let text = base_with("protocol = \"tcp\"", "protocol = \"TCP\"");
    assert_error(
        &text,
        "protocol = \"TCP\", ports",
        "security_group[0].ingress[0].protocol",
        &[
            "unknown protocol \"TCP\"",
            "allowed: \"tcp\", \"udp\", \"icmp\", \"icmpv6\", \"all\"",
        ],
    );
    let text = base_with(
        "protocol = \"HTTP\"\nport = 80\n",
        "protocol = \"GRPC\"\nport = 80\n",
    );
    assert_error(
        &text,
        "GRPC",
        "target_group[0].protocol",
        &["unknown protocol \"GRPC\"", "\"HTTP\", \"HTTPS\", \"TCP\""],
    );
    let text = base_with(
        "protocol = \"HTTP\"\nport = 80\ndefault",
        "protocol = \"UDP\"\nport = 80\ndefault",
    );
    assert_error(
        &text,
        "UDP",
        "listener \"web-alb:80\".protocol",
        &["unknown protocol \"UDP\""],
    );
}
