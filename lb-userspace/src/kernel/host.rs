//! Checks of the host against the configuration before anything is attached:
//! every interface exists and every balancer address is configured.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::model::Config;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("load balancer {lb:?}: interface {interface:?} does not exist on this host")]
    NoInterface { lb: String, interface: String },
    #[error(
        "load balancer {lb:?}: address {addr} is not configured on this host \
         (add it, e.g. `ip addr add {addr}/24 dev IFACE`)"
    )]
    NoAddress { lb: String, addr: IpAddr },
    #[error("cannot list the host's addresses: {0}")]
    Getifaddrs(String),
}

pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every address configured on any interface of this network namespace.
pub fn local_addresses() -> Result<BTreeSet<IpAddr>, HostError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(HostError::Getifaddrs(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    let mut out = BTreeSet::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.insert(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Every problem at once, so one run tells the operator everything to fix.
pub fn check(cfg: &Config) -> Vec<HostError> {
    let mut errors = Vec::new();
    let addrs = match local_addresses() {
        Ok(a) => a,
        Err(e) => return vec![e],
    };
    for lb in &cfg.load_balancers {
        for iface in &lb.interfaces {
            if if_index(iface).is_none() {
                errors.push(HostError::NoInterface {
                    lb: lb.name.clone(),
                    interface: iface.clone(),
                });
            }
        }
        for addr in &lb.addresses {
            if !addrs.contains(addr) {
                errors.push(HostError::NoAddress {
                    lb: lb.name.clone(),
                    addr: *addr,
                });
            }
        }
    }
    errors
}

/// Name of an interface by index, for messages.
pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}
