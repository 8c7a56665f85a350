//! Messages that carry open file descriptors (SCM_RIGHTS) over a Unix
//! `SOCK_SEQPACKET` socket: each message arrives whole or not at all, so a
//! message and its descriptors stay together. A descriptor received is the
//! sender's open file itself (same socket, same accept queue, same lock), not
//! a copy of its state.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::Socket;

/// The kernel's limit of descriptors per message (`SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// The largest message body either side sends: JSON of a few hundred
/// bytes, the listener rows of 1024 listeners (about 40 KiB) the largest.
/// A seqpacket message must fit the socket's send buffer (208 KiB here).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    #[error("{0} descriptors in one message; at most {MAX_FDS}")]
    TooManyFds(usize),
    #[error("a message of {0} bytes; at most {MAX_BODY}")]
    TooLarge(usize),
    /// The control data did not fit: descriptors were lost on the way, so
    /// the message cannot be trusted.
    #[error("descriptors were cut off the message (MSG_CTRUNC)")]
    ControlTruncated,
    #[error("the message was cut off (MSG_TRUNC)")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A message's body and the descriptors that came with it.
pub type Received = (Vec<u8>, Vec<OwnedFd>);

fn control_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe { libc::CMSG_SPACE((fds * size_of::<RawFd>()) as u32) as usize }
}

/// Sends `body` and `fds` as one message. The descriptors stay open here.
pub fn send(sock: &Socket, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), FdPassError> {
    if fds.len() > MAX_FDS {
        return Err(FdPassError::TooManyFds(fds.len()));
    }
    if body.len() > MAX_BODY || body.is_empty() {
        return Err(FdPassError::TooLarge(body.len()));
    }
    // u64 elements: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; control_space(fds.len()).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: body.as_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_space(fds.len()) as _;
        // SAFETY: msg_control points at a buffer of CMSG_SPACE(n fds)
        // bytes, so the first header and its data fit in it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<RawFd>()) as u32) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    }
}

/// Receives one message; `None` when the peer has closed. Descriptors come
/// close-on-exec and are owned by the caller.
pub fn recv(sock: &Socket) -> Result<Option<Received>, FdPassError> {
    recv_with_room(sock, MAX_FDS)
}

/// [`recv`] with room for `max_fds` descriptors.
fn recv_with_room(sock: &Socket, max_fds: usize) -> Result<Option<Received>, FdPassError> {
    let mut body = vec![MaybeUninit::<u8>::uninit(); MAX_BODY];
    let mut control = vec![0u64; control_space(max_fds).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: body.as_mut_ptr().cast(),
        iov_len: body.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = (control.len() * 8) as _;
    let n = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    };
    // Take ownership of whatever arrived first, so an error below still
    // closes it.
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control (msg_controllen says how much);
    // CMSG_FIRSTHDR/NXTHDR stay inside it, and each SCM_RIGHTS entry holds
    // descriptors now open in this process, each taken once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(FdPassError::ControlTruncated);
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(FdPassError::Truncated);
    }
    if n == 0 {
        // A seqpacket peer that closed reads as an empty message; an empty
        // body is never sent.
        return Ok(None);
    }
    // SAFETY: recvmsg initialised the first n bytes.
    let body = body[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    Ok(Some((body, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Type};
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn pair() -> (Socket, Socket) {
        Socket::pair(Domain::UNIX, Type::SEQPACKET.cloexec(), None).unwrap()
    }

    #[test]
    fn a_listening_socket_sent_over_keeps_its_address_and_queue() {
        let (a, b) = pair();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Queued before the handover: it must be accepted on the other side.
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        send(&a, b"group", &[listener.as_fd()]).unwrap();
        drop(listener);
        let (body, mut fds) = recv(&b).unwrap().unwrap();
        assert_eq!(body, b"group");
        assert_eq!(fds.len(), 1);
        let got = std::net::TcpListener::from(fds.pop().unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
        let (mut served, _) = got.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        served.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
        // Received close-on-exec.
        // SAFETY: F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(got.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn messages_keep_their_boundaries_and_their_own_descriptors() {
        let (a, b) = pair();
        let files: Vec<std::fs::File> = (0..3).map(|_| tempfile()).collect();
        send(&a, b"one", &[files[0].as_fd()]).unwrap();
        send(&a, b"two", &[files[1].as_fd(), files[2].as_fd()]).unwrap();
        send(&a, b"none", &[]).unwrap();
        let (m1, f1) = recv(&b).unwrap().unwrap();
        let (m2, f2) = recv(&b).unwrap().unwrap();
        let (m3, f3) = recv(&b).unwrap().unwrap();
        assert_eq!((m1.as_slice(), f1.len()), (&b"one"[..], 1));
        assert_eq!((m2.as_slice(), f2.len()), (&b"two"[..], 2));
        assert_eq!((m3.as_slice(), f3.len()), (&b"none"[..], 0));
        drop(a);
        assert!(recv(&b).unwrap().is_none(), "closed peer reads as None");
    }

    #[test]
    fn too_many_descriptors_are_refused_before_sending_and_the_most_arrive_whole() {
        let (a, b) = pair();
        let f = tempfile();
        let fds: Vec<BorrowedFd<'_>> = (0..MAX_FDS + 1).map(|_| f.as_fd()).collect();
        assert!(matches!(
            send(&a, b"x", &fds),
            Err(FdPassError::TooManyFds(254))
        ));
        send(&a, b"x", &fds[..MAX_FDS]).unwrap();
        let (_, got) = recv(&b).unwrap().unwrap();
        assert_eq!(got.len(), MAX_FDS);
    }

    #[test]
    fn a_body_up_to_the_limit_goes_whole_and_an_empty_or_larger_one_is_refused() {
        let (a, b) = pair();
        let most = vec![7u8; MAX_BODY];
        send(&a, &most, &[]).unwrap();
        let (got, _) = recv(&b).unwrap().unwrap();
        assert_eq!(got, most);
        assert!(matches!(
            send(&a, &vec![7u8; MAX_BODY + 1], &[]),
            Err(FdPassError::TooLarge(n)) if n == MAX_BODY + 1
        ));
        assert!(matches!(send(&a, b"", &[]), Err(FdPassError::TooLarge(0))));
    }

    #[test]
    fn descriptors_cut_off_by_a_small_control_buffer_are_an_error() {
        // Room for one descriptor (two, with the alignment padding), four
        // sent: the kernel sets MSG_CTRUNC, which must not pass as a
        // message with fewer descriptors.
        let (a, b) = pair();
        let f = tempfile();
        send(&a, b"four", &[f.as_fd(), f.as_fd(), f.as_fd(), f.as_fd()]).unwrap();
        assert!(matches!(
            recv_with_room(&b, 1),
            Err(FdPassError::ControlTruncated)
        ));
    }

    fn tempfile() -> std::fs::File {
        std::fs::File::open("/dev/null").unwrap()
    }
}
