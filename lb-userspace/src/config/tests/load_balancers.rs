//! `[[load_balancer]]`: scheme, addresses, interfaces and limits.

use super::*;

#[test]
fn internal_scheme_needs_internal_networks() {
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\nscheme = \"internal\"\n",
    );
    assert_error(
        &text,
        "[[load_balancer]]",
        "load_balancer[0].internal_networks",
        &[
            "an internal load balancer needs internal_networks",
            "\"10.0.0.0/16\"",
        ],
    );
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\nscheme = \"internal\"\ninternal_networks = []\n",
    );
    assert_error(
        &text,
        "internal_networks = []",
        "load_balancer[0].internal_networks",
        &["needs internal_networks"],
    );
}

#[test]
fn internet_facing_with_internal_networks() {
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\ninternal_networks = [\"10.0.0.0/8\"]\n",
    );
    assert_error(
        &text,
        "internal_networks",
        "load_balancer[0].internal_networks",
        &["applies to scheme = \"internal\" only"],
    );
    let text = base_with(
        "name = \"web-alb\"\n",
        "name = \"web-alb\"\nscheme = \"public\"\n",
    );
    assert_error(
        &text,
        "public",
        "load_balancer[0].scheme",
        &[
            "unknown scheme \"public\"",
            "\"internet-facing\", \"internal\"",
        ],
    );
}

#[test]
fn balancer_needs_addresses_interfaces_and_security_groups() {
    let text = base_with("addresses = [\"10.0.0.10\"]", "addresses = []");
    assert_error(
        &text,
        "addresses = []",
        "load_balancer[0].addresses",
        &["at least one address is required"],
    );
    let text = base_with("interfaces = [\"eth0\"]", "interfaces = []");
    assert_error(
        &text,
        "interfaces = []",
        "load_balancer[0].interfaces",
        &["at least one interface is required"],
    );
    let text = base_with("security_groups = [\"web\"]", "security_groups = []");
    assert_error(
        &text,
        "security_groups = []",
        "load_balancer[0].security_groups",
        &["at least one security group is required"],
    );
    let text = base_with(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\", \"a/b\"]",
    );
    assert_error(
        &text,
        "a/b",
        "load_balancer[0].interfaces[1]",
        &["invalid interface name \"a/b\""],
    );
}

#[test]
fn bad_ip_addresses() {
    let text = base_with(
        "addresses = [\"10.0.0.10\"]",
        "addresses = [\"10.0.0.10/24\"]",
    );
    assert_error(
        &text,
        "10.0.0.10/24",
        "load_balancer[0].addresses[0]",
        &[
            "invalid IP address \"10.0.0.10/24\"",
            "without a prefix length",
        ],
    );
    let text = base_with("{ address = \"10.0.1.10\" }", "{ address = \"web1\" }");
    assert_error(
        &text,
        "web1",
        "target_group[0].targets[0].address",
        &[
            "invalid IP address \"web1\"",
            "IPv4 such as",
            "IPv6 such as",
        ],
    );
    let text = base_with("{ address = \"10.0.1.10\" }", "{ address = \"0.0.0.0\" }");
    assert_error(
        &text,
        "0.0.0.0\" }",
        "target_group[0].targets[0].address",
        &["cannot be a target address"],
    );
}

#[test]
fn an_address_belongs_to_one_balancer() {
    let text = base_plus(
        &load_balancer("other", "10.0.0.10")
            .set("addresses", "[\"10.0.0.10\"] # taken")
            .to_string(),
    );
    assert_error(
        &text,
        "# taken",
        "load_balancer[1].addresses[0]",
        &["address 10.0.0.10 already belongs to load_balancer \"web-alb\" (line 23)"],
    );
    let text = base_plus(
        &load_balancer("other", "10.0.0.20")
            .set("addresses", "[\"10.0.0.20\",\n  \"10.0.0.20\"] # again")
            .to_string(),
    );
    let first = line_of(&text, "[\"10.0.0.20\",");
    assert_error(
        &text,
        "# again",
        "load_balancer[1].addresses[1]",
        &[&format!(
            "address 10.0.0.20 is listed twice (first at line {first})"
        )],
    );
}
