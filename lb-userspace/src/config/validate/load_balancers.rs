//! `[[load_balancer]]`: scheme, addresses, interfaces, security groups and
//! connection limits; addresses are owned by one balancer only.

use super::*;

impl Checker<'_> {
    pub(super) fn load_balancer(
        &mut self,
        i: usize,
        lb: &S<RawLoadBalancer>,
        names: &Names,
        address_owner: &mut HashMap<IpAddr, (String, usize)>,
    ) -> LoadBalancer {
        let p = format!("load_balancer[{i}]");
        let span = lb.span();
        let lb = lb.get_ref();
        let name = lb.name.get_ref().clone();

        // `None` when the scheme is invalid (reported): skip the checks that
        // depend on it rather than guess.
        let scheme = match &lb.scheme {
            None => Some(Scheme::InternetFacing),
            Some(s) => self.choice(s, &format!("{p}.scheme"), SCHEMES),
        };
        let field = format!("{p}.internal_networks");
        let mut internal_networks = Vec::new();
        if let Some(nets) = &lb.internal_networks {
            for (j, n) in nets.get_ref().iter().enumerate() {
                if let Some(net) = self.cidr(n, &format!("{field}[{j}]")) {
                    internal_networks.push(net);
                }
            }
        }
        let networks = lb
            .internal_networks
            .as_ref()
            .filter(|n| !n.get_ref().is_empty());
        match (scheme, networks) {
            (Some(Scheme::Internal), None) => {
                let at = lb
                    .internal_networks
                    .as_ref()
                    .map_or(span.clone(), |n| n.span());
                self.err(
                    at,
                    field,
                    "an internal load balancer needs internal_networks, the client networks allowed to connect, e.g. [\"10.0.0.0/16\"]",
                );
            }
            (Some(Scheme::InternetFacing), Some(nets)) => {
                self.err(
                    nets.span(),
                    field,
                    "internal_networks applies to scheme = \"internal\" only; set the scheme to internal or remove internal_networks",
                );
            }
            _ => {}
        }
        let scheme = scheme.unwrap_or(Scheme::InternetFacing);

        let mut interfaces = Vec::new();
        let field = format!("{p}.interfaces");
        if lb.interfaces.get_ref().is_empty() {
            self.err(
                lb.interfaces.span(),
                field.clone(),
                "at least one interface is required, e.g. [\"eth0\"] (where the XDP program attaches)",
            );
        }
        for (j, itf) in lb.interfaces.get_ref().iter().enumerate() {
            let f = format!("{field}[{j}]");
            let s = itf.get_ref();
            if let Err(msg) = check_interface(s) {
                self.err(itf.span(), f, msg);
            } else if interfaces.contains(s) {
                self.err(itf.span(), f, format!("interface {s:?} is listed twice"));
            } else {
                interfaces.push(s.clone());
            }
        }

        let mut addresses = Vec::new();
        let field = format!("{p}.addresses");
        if lb.addresses.get_ref().is_empty() {
            self.err(
                lb.addresses.span(),
                field.clone(),
                "at least one address is required, e.g. [\"10.0.0.10\"] (IPv4 and/or IPv6)",
            );
        }
        for (j, a) in lb.addresses.get_ref().iter().enumerate() {
            let f = format!("{field}[{j}]");
            let Some(ip) = self.ip(a, &f, "load balancer") else {
                continue;
            };
            let line = self.line(&a.span());
            match address_owner.get(&ip) {
                Some((owner, first)) if *owner == name => self.err(
                    a.span(),
                    f,
                    format!("address {ip} is listed twice (first at line {first})"),
                ),
                Some((owner, first)) => self.err(
                    a.span(),
                    f,
                    format!(
                        "address {ip} already belongs to load_balancer {owner:?} (line {first}); an address can belong to one balancer only"
                    ),
                ),
                None => {
                    address_owner.insert(ip, (name.clone(), line));
                    addresses.push(ip);
                }
            }
        }

        let mut security_groups = Vec::new();
        let field = format!("{p}.security_groups");
        if lb.security_groups.get_ref().is_empty() {
            self.err(
                lb.security_groups.span(),
                field.clone(),
                "at least one security group is required; with none, all traffic would be dropped",
            );
        }
        for (j, g) in lb.security_groups.get_ref().iter().enumerate() {
            let f = format!("{field}[{j}]");
            let s = g.get_ref();
            if !names.security_groups.contains(s) {
                let msg = unknown("security_group", s, &names.security_groups);
                self.err(g.span(), f, msg);
            } else if security_groups.contains(s) {
                self.err(g.span(), f, format!("security group {s:?} is listed twice"));
            } else {
                security_groups.push(s.clone());
            }
        }

        let idle_timeout = self.duration(
            lb.idle_timeout.as_ref(),
            &format!("{p}.idle_timeout"),
            secs(60),
            &IDLE_TIMEOUT,
        );
        let request_head_timeout = self.duration(
            lb.request_head_timeout.as_ref(),
            &format!("{p}.request_head_timeout"),
            idle_timeout.min(secs(60)),
            &IDLE_TIMEOUT,
        );
        // The ALB's limits: 64 KiB of request line and header fields, 100 fields.
        let max_header_bytes = lb
            .max_header_bytes
            .as_ref()
            .and_then(|v| self.int(v, &format!("{p}.max_header_bytes"), 8192, 1 << 20))
            .unwrap_or(65536) as usize;
        let max_headers = lb
            .max_headers
            .as_ref()
            .and_then(|v| self.int(v, &format!("{p}.max_headers"), 16, 1000))
            .unwrap_or(100) as usize;

        LoadBalancer {
            name,
            scheme,
            internal_networks,
            interfaces,
            addresses,
            security_groups,
            idle_timeout,
            request_head_timeout,
            max_header_bytes,
            max_headers,
            trust_request_id: lb.trust_request_id.unwrap_or(false),
        }
    }

    /// The kernel's address maps hold at most `MAX_ADDRS` per family.
    pub(super) fn address_limits(&mut self, lbs: &[LoadBalancer], raw: &RawConfig) {
        let max = lb_common::MAX_ADDRS as usize;
        for (family, is_v4) in [("IPv4", true), ("IPv6", false)] {
            let count: usize = lbs
                .iter()
                .map(|lb| lb.addresses.iter().filter(|a| a.is_ipv4() == is_v4).count())
                .sum();
            if count > max {
                let span = raw.load_balancer.first().map_or(0..0, |l| l.span());
                self.err(
                    span,
                    "load_balancer",
                    format!("too many {family} balancer addresses: {count}, at most {max} are supported"),
                );
            }
        }
    }
}

pub(super) fn check_interface(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid interface name {name:?}: 1-{MAX_IFNAME_LEN} visible characters, no '/' or ':'"
        ))
    }
}
