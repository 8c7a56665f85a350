//! Keeps one listening address's connections even across the workers.
//!
//! SO_REUSEPORT gives each connection to a worker by a hash of its addresses.
//! Over a few dozen long-lived connections that is far from even (64 can
//! split 39 to 27 over two workers), and every request on the busier worker
//! waits behind more others: the tail latency. So a worker that accepts a
//! connection while it holds more than the least loaded worker passes the
//! connection on, as HAProxy balances accepted connections across threads.
//! Only the accept is shared; the connection then lives on one worker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::proxy::conn::rebalance::Load;
use crate::proxy::conn::socket::ClientSocket;
use crate::worker::PerWorker;

/// How many more connections than the least loaded worker a worker keeps
/// before passing new ones on. One lets a short-lived connection stay where
/// it landed (passing one on costs two epoll changes and a wake-up) while
/// long-lived ones end up at most two apart.
const SLACK: usize = 1;

/// Open connections per worker and the way to hand one to each worker.
#[derive(Debug)]
pub struct Spread {
    /// Each worker's count on a cache line of its own: counts change on
    /// every accept and close.
    open: PerWorker<AtomicUsize>,
    /// One per worker, in order.
    inboxes: Box<[mpsc::UnboundedSender<Arrival>]>,
    /// What each worker served, and which connections it is to move on
    /// ([`super::rebalance`]).
    load: Load,
}

/// Connections passed to one worker by the others.
pub struct Inbox(mpsc::UnboundedReceiver<Arrival>);

/// A connection on its way to the worker it was seated on.
pub struct Arrival {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub seat: Seat,
    /// Moved from another worker after serving there ([`super::rebalance`]): not
    /// a new connection.
    pub migrated: bool,
}

/// What became of a connection sent to another worker.
pub enum Sent {
    Moved,
    /// That worker has stopped: the connection stays, seated here again.
    Back(ClientSocket, Seat),
    /// The socket could not change hands (a failed epoll change): closed.
    Lost,
}

/// A connection's place on a worker, counted until dropped.
#[derive(Debug)]
pub struct Seat {
    spread: Arc<Spread>,
    worker: usize,
}

impl Seat {
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Counts the connection on `worker` instead.
    fn move_to(&mut self, worker: usize) {
        self.spread.open.at(self.worker).fetch_sub(1, Relaxed);
        self.spread.open.at(worker).fetch_add(1, Relaxed);
        self.worker = worker;
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.spread.open.at(self.worker).fetch_sub(1, Relaxed);
    }
}

impl Spread {
    /// A spread over `workers` workers and each worker's inbox, in order.
    pub fn new(workers: usize) -> (Arc<Self>, Vec<Inbox>) {
        let workers = workers.max(1);
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Inbox(rx))
            })
            .unzip();
        let spread = Self {
            open: PerWorker::default(),
            inboxes: senders.into(),
            load: Load::default(),
        };
        (Arc::new(spread), inboxes)
    }

    /// Takes a connection worker `me` accepted: back with its seat when it is
    /// to be served here, `None` when it was passed to another worker.
    pub fn place(
        self: &Arc<Self>,
        stream: ClientSocket,
        peer: SocketAddr,
        me: usize,
    ) -> Option<(ClientSocket, Seat)> {
        let seat = self.seat(me);
        if seat.worker == me {
            return Some((stream, seat));
        }
        self.pass(stream, peer, seat, me)
    }

    /// Seats a connection worker `me` accepted: on `me`, unless another
    /// worker holds more than [`SLACK`] fewer connections.
    fn seat(self: &Arc<Self>, me: usize) -> Seat {
        let workers = self.inboxes.len();
        let me = me.min(workers - 1);
        let count = |w: usize| self.open_on(w);
        let least = (0..workers).min_by_key(|&w| count(w)).unwrap_or(me);
        let worker = if count(me) > count(least) + SLACK {
            least
        } else {
            me
        };
        self.open.at(worker).fetch_add(1, Relaxed);
        Seat {
            spread: Arc::clone(self),
            worker,
        }
    }

    /// Passes an accepted connection to the worker it was seated on. Gives it
    /// back, seated on `me`, if that cannot be done (the worker has stopped);
    /// the connection is then served where it was accepted.
    fn pass(
        self: &Arc<Self>,
        stream: ClientSocket,
        peer: SocketAddr,
        seat: Seat,
        me: usize,
    ) -> Option<(ClientSocket, Seat)> {
        match self.send(stream, peer, seat, me, false) {
            Sent::Back(stream, seat) => Some((stream, seat)),
            Sent::Moved | Sent::Lost => None,
        }
    }

    /// Moves a connection worker `me` has been serving to worker `to`,
    /// between two of its requests ([`super::rebalance`]). Gives it back if that
    /// worker has stopped: it is then served on here.
    pub fn migrate(
        &self,
        stream: ClientSocket,
        peer: SocketAddr,
        mut seat: Seat,
        to: usize,
    ) -> Sent {
        let me = seat.worker;
        seat.move_to(to);
        self.send(stream, peer, seat, me, true)
    }

    /// Sends a connection to the worker its seat names; back to `me` if that
    /// worker has stopped.
    fn send(
        &self,
        stream: ClientSocket,
        peer: SocketAddr,
        seat: Seat,
        me: usize,
        migrated: bool,
    ) -> Sent {
        // Leaves this worker's reactor; what the client already sent stays
        // in the socket for the next one.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot pass a connection on");
                return Sent::Lost;
            }
        };
        let to = seat.worker;
        let arrival = Arrival {
            stream,
            peer,
            seat,
            migrated,
        };
        let Err(mpsc::error::SendError(mut back)) = self.inboxes[to].send(arrival) else {
            return Sent::Moved;
        };
        back.seat.move_to(me);
        Sent::Back(ClientSocket::Direct(back.stream), back.seat)
    }

    /// What the workers serve, for the rebalancing.
    pub fn load(&self) -> &Load {
        &self.load
    }

    /// Workers sharing this listening address.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Open connections per worker, in order.
    pub fn open(&self) -> Vec<usize> {
        (0..self.inboxes.len()).map(|w| self.open_on(w)).collect()
    }

    /// Open connections on `worker`.
    pub fn open_on(&self, worker: usize) -> usize {
        self.open.at(worker).load(Relaxed)
    }
}

impl Inbox {
    /// The next connection passed to this worker; never ends while the
    /// spread lives.
    pub async fn recv(&mut self) -> Option<Arrival> {
        self.0.recv().await
    }

    /// Refuses further connections (they stay with the worker that has
    /// them) and returns those already passed here: dropped with the inbox,
    /// their sockets would close on clients that did nothing wrong.
    pub fn close(mut self) -> Vec<Arrival> {
        self.0.close();
        let mut left = Vec::new();
        while let Ok(a) = self.0.try_recv() {
            left.push(a);
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn a_worker_passes_connections_on_once_it_is_ahead_by_more_than_the_slack() {
        let (spread, _inboxes) = Spread::new(2);
        // Worker 0 accepts everything: it keeps SLACK + 1, then the two take
        // turns, never more than SLACK + 1 apart.
        let mut seats: Vec<Seat> = (0..10).map(|_| spread.seat(0)).collect();
        let placed: Vec<usize> = seats.iter().map(Seat::worker).collect();
        assert_eq!(placed, [0, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
        assert_eq!(spread.open(), vec![6, 4]);
        // A closed connection frees its seat: worker 1, now empty, gets the
        // next one, and worker 0 keeps its own again once they are even.
        seats.retain(|s| s.worker() == 0);
        assert_eq!(spread.open(), vec![6, 0]);
        assert_eq!(spread.seat(0).worker(), 1);
        assert_eq!(spread.seat(1).worker(), 1);
    }

    #[test]
    fn seats_stay_within_the_slack_whichever_worker_accepts() {
        let (spread, _inboxes) = Spread::new(3);
        // A skewed accept pattern, like SO_REUSEPORT's hash on few connections.
        let pattern = [0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 1, 0];
        let seats: Vec<Seat> = (0..60).map(|i| spread.seat(pattern[i % 12])).collect();
        let open = spread.open();
        let (lo, hi) = (open.iter().min().unwrap(), open.iter().max().unwrap());
        assert!(hi - lo <= SLACK + 1, "{open:?}");
        assert_eq!(open.iter().sum::<usize>(), seats.len());
        drop(seats);
        assert_eq!(spread.open(), vec![0, 0, 0]);
    }

    #[tokio::test]
    async fn a_passed_connection_arrives_with_its_seat_and_unread_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (spread, mut inboxes) = Spread::new(2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(b"hello").await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let _first = spread.seat(0);
        let _second = spread.seat(0);
        let seat = spread.seat(0);
        assert_eq!(seat.worker(), 1);
        assert!(spread
            .pass(ClientSocket::Registered(accepted), peer, seat, 0)
            .is_none());
        let arrival = inboxes[1].recv().await.unwrap();
        assert_eq!((arrival.peer, arrival.seat.worker()), (peer, 1));
        let mut stream = TcpStream::from_std(arrival.stream).unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        drop(arrival.seat);
        assert_eq!(spread.open(), vec![2, 0]);
    }

    #[tokio::test]
    async fn a_connection_for_a_stopped_worker_is_served_where_it_was_accepted() {
        let (spread, mut inboxes) = Spread::new(2);
        drop(inboxes.pop());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let _held = (spread.seat(0), spread.seat(0));
        let seat = spread.seat(0);
        assert_eq!(seat.worker(), 1);
        let (stream, seat) = spread
            .pass(ClientSocket::Registered(accepted), peer, seat, 0)
            .expect("given back");
        assert!(matches!(stream, ClientSocket::Direct(_)));
        assert_eq!(seat.worker(), 0);
        assert_eq!(spread.open(), vec![3, 0]);
    }
}
