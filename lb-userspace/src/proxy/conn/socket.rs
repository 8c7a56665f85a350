//! A client's socket, known to the worker's reactor only once a read or a
//! write on it would block.
//!
//! A connection that carries one request (`Connection: close`, or a client
//! that does not keep connections alive) usually has its request waiting
//! by the time it is accepted, takes its response without filling the
//! socket's buffer, and is closed: it never has to be waited on. Registering
//! it with epoll anyway costs two system calls of the ten such a connection
//! needs (an add when it is accepted, a delete when it is dropped), which
//! HAProxy saves the same way. A kept-alive connection registers at its
//! first wait for the next request, once.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// An accepted client connection.
#[derive(Debug)]
pub enum ClientSocket {
    /// Not registered yet: reads and writes go straight to the socket.
    Direct(std::net::TcpStream),
    Registered(TcpStream),
    /// Only while it changes from one to the other (or if that failed).
    Closed,
}

impl ClientSocket {
    /// The socket out of this worker's reactor, for another worker.
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        match self {
            ClientSocket::Direct(s) => Ok(s),
            ClientSocket::Registered(s) => s.into_std(),
            ClientSocket::Closed => Err(closed()),
        }
    }

    /// The socket's descriptor, while it has one.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            ClientSocket::Direct(s) => Some(s.as_raw_fd()),
            ClientSocket::Registered(s) => Some(s.as_raw_fd()),
            ClientSocket::Closed => None,
        }
    }

    /// The registered socket, registering it first if it is not yet.
    fn registered(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        if let ClientSocket::Direct(_) = self {
            let ClientSocket::Direct(s) = std::mem::replace(self, ClientSocket::Closed) else {
                unreachable!()
            };
            *self = ClientSocket::Registered(TcpStream::from_std(s)?);
        }
        match self {
            ClientSocket::Registered(s) => Ok(Pin::new(s)),
            _ => Err(closed()),
        }
    }

    /// `direct` on the unregistered socket; once that would block (or if the
    /// socket is registered already), `registered` on the registered one.
    /// `arg` goes to whichever runs.
    fn poll_io<A, T>(
        &mut self,
        mut arg: A,
        direct: impl FnOnce(&mut std::net::TcpStream, &mut A) -> io::Result<T>,
        registered: impl FnOnce(Pin<&mut TcpStream>, A) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let ClientSocket::Direct(s) = self {
            match direct(s, &mut arg) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
        match self.registered() {
            Ok(s) => registered(s, arg),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "client socket closed")
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_io(
            buf,
            |s, buf| {
                let n = s.read(buf.initialize_unfilled())?;
                buf.advance(n);
                Ok(())
            },
            |s, buf| s.poll_read(cx, buf),
        )
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(
            data,
            |s, data| s.write(data),
            |s, data| s.poll_write(cx, data),
        )
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(
            data,
            |s, data| s.write_vectored(data),
            |s, data| s.poll_write_vectored(cx, data),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TCP sockets have nothing to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            ClientSocket::Direct(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            ClientSocket::Registered(s) => Pin::new(s).poll_shutdown(cx),
            ClientSocket::Closed => Poll::Ready(Err(closed())),
        }
    }
}

/// A listening socket accepted from without registering what it accepts.
pub struct Listener(AsyncFd<std::net::TcpListener>);

impl Listener {
    /// Registers `l` (non-blocking) with the current worker's reactor.
    pub fn new(l: std::net::TcpListener) -> io::Result<Self> {
        // SAFETY: a std listener owns its descriptor, and the AsyncFd owns the
        // listener: the descriptor stays open and the same until dropped.
        unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }
            .map(Listener)
            .map_err(io::Error::from)
    }

    /// The socket, out of the worker's reactor and still listening.
    pub fn into_std(self) -> std::net::TcpListener {
        self.0.into_inner()
    }

    /// The next connection, non-blocking and close-on-exec. Accepted
    /// sockets inherit the listener's TCP_NODELAY.
    pub async fn accept(&self) -> io::Result<(ClientSocket, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|l| accept4(l.get_ref())) {
                Ok(r) => return r.map(|(s, peer)| (ClientSocket::Direct(s), peer)),
                Err(_would_block) => continue,
            }
        }
    }
}

fn accept4(l: &std::net::TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (socket, addr) =
        socket2::SockRef::from(&l.as_fd()).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer is not an IP address"))?;
    Ok((socket.into(), peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn listener() -> Listener {
        use crate::proxy::conn::listener::{bind_steered, Family};
        let l = bind_steered(Family::V4, 1).unwrap().pop().unwrap();
        Listener::new(l).unwrap()
    }

    /// Longer than any passing run waits for an event.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

    /// Waits until `s` has bytes to read, without registering it with the
    /// reactor (a direct `poll`): the request has arrived.
    fn wait_readable(s: &std::net::TcpStream) {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length of the call.
        let n = unsafe { libc::poll(&mut fd, 1, PATIENCE.as_millis() as i32) };
        assert_eq!(n, 1, "nothing to read: {}", io::Error::last_os_error());
    }

    #[tokio::test]
    async fn a_connection_with_its_request_waiting_is_served_without_registering() {
        let l = listener();
        let addr = l.0.get_ref().local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let (mut s, peer) = l.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let ClientSocket::Direct(std) = &s else {
            panic!("registered at accept")
        };
        assert!(std.nodelay().unwrap(), "TCP_NODELAY inherited");
        // The request is there before the first read, as when it came with
        // the handshake.
        wait_readable(std);
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"pong").await.unwrap();
        assert!(matches!(s, ClientSocket::Direct(_)), "nothing had to wait");
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        // Nothing more to read: the first poll of the read finds that out,
        // registers the socket and waits; only then does the client send.
        let mut more = [0u8; 5];
        let mut read = std::pin::pin!(s.read_exact(&mut more));
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "nothing was sent yet");
        client.write_all(b"again").await.unwrap();
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the registered socket is woken by the data")
            .unwrap();
        assert_eq!(&more, b"again");
        assert!(matches!(s, ClientSocket::Registered(_)));
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the client sees the end");
    }
}
