//! `[[security_group]]`: names and ingress rules (protocol, ports, CIDR).

use super::*;

impl Checker<'_> {
    pub(super) fn security_group(&mut self, i: usize, g: &S<RawSecurityGroup>) -> SecurityGroup {
        let p = format!("security_group[{i}]");
        let g = g.get_ref();
        let ingress = g
            .ingress
            .iter()
            .enumerate()
            .filter_map(|(j, r)| self.ingress(&format!("{p}.ingress[{j}]"), r))
            .collect();
        SecurityGroup {
            name: g.name.get_ref().clone(),
            description: g.description.clone().unwrap_or_default(),
            ingress,
        }
    }

    pub(super) fn ingress(&mut self, p: &str, r: &S<RawIngress>) -> Option<IngressRule> {
        let span = r.span();
        let r = r.get_ref();
        let protocol = self.choice(&r.protocol, &format!("{p}.protocol"), IP_PROTOCOLS);
        let source = self.cidr(&r.source, &format!("{p}.source"));
        let field = format!("{p}.ports");
        let ports = match (protocol, &r.ports) {
            (Some(IpProtocol::Tcp | IpProtocol::Udp), Some(ports)) => {
                match parse_port_range(ports.get_ref()) {
                    Ok(range) => Some(range),
                    Err(msg) => {
                        self.err(ports.span(), field, msg);
                        None
                    }
                }
            }
            (Some(proto @ (IpProtocol::Tcp | IpProtocol::Udp)), None) => {
                self.err(
                    span,
                    field,
                    format!(
                        "ports is required for {} rules: a port \"80\" or a range \"8000-8100\"",
                        protocol_name(IP_PROTOCOLS, proto)
                    ),
                );
                None
            }
            (Some(proto), Some(ports)) => {
                self.err(
                    ports.span(),
                    field,
                    format!(
                        "ports must be absent for {} rules (they cover every port); ports are for tcp and udp only",
                        protocol_name(IP_PROTOCOLS, proto)
                    ),
                );
                None
            }
            (Some(_), None) => Some((0, u16::MAX)),
            (None, _) => None,
        };
        Some(IngressRule {
            protocol: protocol?,
            ports: ports?,
            source: source?,
            description: r.description.clone().unwrap_or_default(),
        })
    }
}
