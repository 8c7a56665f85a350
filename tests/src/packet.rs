//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN`: just enough of each header
//! for the XDP program's parser (checksums are not computed; XDP does not check them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        ty: u8,
    },
    Icmpv6 {
        ty: u8,
    },
    /// An ICMP (IPv4) or ICMPv6 error of type `ty` quoting `quoted`: the
    /// start of the IP packet it is about (see [`Packet::ip_bytes`]).
    IcmpError {
        ty: u8,
        quoted: Vec<u8>,
    },
    /// Another protocol number with an opaque payload.
    Other {
        proto: u8,
    },
}

#[derive(Clone, Debug)]
pub enum Ipv6Ext {
    HopByHop,
    DestOpts,
    Routing,
    /// A fragment header: offset in 8-byte units, more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
}

/// TCP header flags, for [`Packet::tcp_flags`].
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// A frame to build.
#[derive(Clone, Debug)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub vlans: Vec<u16>,
    /// IPv4 only: (more-fragments, offset in 8-byte units).
    pub v4_frag: Option<(bool, u16)>,
    pub v6_ext: Vec<Ipv6Ext>,
    pub payload: usize,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// Bytes of the transport header and payload the IP length counts; the
    /// rest of the frame is trailing padding (`None`: all of it counts).
    pub ip_counts: Option<usize>,
    /// The TCP header's flags ([`TCP_SYN`] unless set).
    pub tcp_flags: u8,
}

impl Packet {
    pub fn new(src: &str, dst: &str, l4: L4) -> Self {
        Self {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4,
            vlans: vec![],
            v4_frag: None,
            v6_ext: vec![],
            payload: 16,
            hop_limit: 64,
            ip_counts: None,
            tcp_flags: TCP_SYN,
        }
    }

    pub fn tcp(src: &str, dst: &str, dport: u16) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport: 40000,
                dport,
            },
        )
    }

    pub fn udp(src: &str, dst: &str, dport: u16) -> Self {
        Self::new(
            src,
            dst,
            L4::Udp {
                sport: 40000,
                dport,
            },
        )
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push(id);
        self
    }

    pub fn v4_fragment(mut self, more: bool, offset: u16) -> Self {
        self.v4_frag = Some((more, offset));
        self
    }

    pub fn ext(mut self, e: Ipv6Ext) -> Self {
        self.v6_ext.push(e);
        self
    }

    /// The TCP header carries `flags` (e.g. `TCP_SYN | TCP_ACK`) instead of
    /// a lone SYN.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    pub fn hop_limit(mut self, hops: u8) -> Self {
        self.hop_limit = hops;
        self
    }

    /// The IP header says the packet ends `n` bytes into its transport
    /// header; the frame still carries all of it, as padding.
    pub fn ip_length_cut_to(mut self, n: usize) -> Self {
        self.ip_counts = Some(n);
        self
    }

    /// The frame without its Ethernet header: what an ICMP error quotes.
    pub fn ip_bytes(&self) -> Vec<u8> {
        self.build()[14 + 4 * self.vlans.len()..].to_vec()
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => 1,
            L4::Icmpv6 { .. } => 58,
            L4::IcmpError { .. } if self.dst.is_ipv4() => 1,
            L4::IcmpError { .. } => 58,
            L4::Other { proto } => proto,
        }
    }

    fn transport(&self) -> Vec<u8> {
        let mut t = match self.l4 {
            L4::Tcp { sport, dport } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[12] = 5 << 4; // data offset
                h[13] = self.tcp_flags;
                h
            }
            L4::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload) as u16).to_be_bytes());
                h
            }
            L4::Icmp { ty } | L4::Icmpv6 { ty } => vec![ty, 0, 0, 0, 0, 0, 0, 0],
            L4::IcmpError { ty, ref quoted } => {
                let mut h = vec![ty, 0, 0, 0, 0, 0, 0, 0];
                h.extend_from_slice(quoted);
                return h;
            }
            L4::Other { .. } => vec![],
        };
        t.extend(std::iter::repeat_n(0xab, self.payload));
        t
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for id in &self.vlans {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let l4 = self.transport();
        let counted = self.ip_counts.unwrap_or(l4.len());
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut h = ipv4_header(s, d, self.proto(), counted, self.v4_frag);
                h[8] = self.hop_limit;
                f.extend(h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut exts = Vec::new();
                let kinds: Vec<u8> = self
                    .v6_ext
                    .iter()
                    .map(|e| match e {
                        Ipv6Ext::HopByHop => 0,
                        Ipv6Ext::Routing => 43,
                        Ipv6Ext::Fragment { .. } => 44,
                        Ipv6Ext::DestOpts => 60,
                    })
                    .chain(std::iter::once(self.proto()))
                    .collect();
                for (i, e) in self.v6_ext.iter().enumerate() {
                    let next = kinds[i + 1];
                    match e {
                        Ipv6Ext::Fragment { offset, more } => {
                            let off = (offset << 3) | u16::from(*more);
                            exts.extend_from_slice(&[next, 0]);
                            exts.extend_from_slice(&off.to_be_bytes());
                            exts.extend_from_slice(&[0, 0, 0, 1]);
                        }
                        _ => exts.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
                    }
                }
                let mut h = ipv6_header(s, d, kinds[0], exts.len() + counted);
                h[7] = self.hop_limit;
                f.extend(h);
                f.extend(exts);
            }
            _ => panic!("source and destination of different families"),
        }
        f.extend(l4);
        f
    }
}

fn ipv4_header(
    s: Ipv4Addr,
    d: Ipv4Addr,
    proto: u8,
    l4_len: usize,
    frag: Option<(bool, u16)>,
) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    let flags = match frag {
        Some((more, offset)) => (u16::from(more) << 13) | offset,
        None => 0x4000, // DF
    };
    h[6..8].copy_from_slice(&flags.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&s.octets());
    h[16..20].copy_from_slice(&d.octets());
    h
}

fn ipv6_header(s: Ipv6Addr, d: Ipv6Addr, next: u8, payload: usize) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&s.octets());
    h[24..40].copy_from_slice(&d.octets());
    h
}

/// An ARP request frame (who-has `target`).
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 2, 0x08, 0x06,
    ];
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// `struct bpf_attr`'s `test` member, for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zero: the kernel refuses non-zero bytes past the
    /// last field it knows.
    _pad: u32,
}

/// Runs the program behind `prog` on `frame` `repeat` times
/// (`BPF_PROG_TEST_RUN`), from any thread: aya's own test run borrows the
/// program, which a test that writes the maps at the same time cannot
/// share. Returns the last run's action.
pub fn test_run_raw(
    prog: std::os::fd::BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: attr is a valid `bpf_attr` prefix whose data_in points at
    // frame, alive for the call; no output buffer is given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.retval)
}
