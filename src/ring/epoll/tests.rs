//! The epoll driver against real sockets: every op's emulation, chains,
//! cancels and the readiness bookkeeping.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

/// Our end as an op descriptor, and the peer end as a std stream.
fn pair() -> (Rc<OwnedFd>, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    (Rc::new(OwnedFd::from(a)), b)
}

fn recv(fd: &Rc<OwnedFd>, len: u32, flags: i32) -> Op {
    Op::Recv {
        fd: fd.clone().into(),
        buf: Vec::with_capacity(len as usize),
        len,
        flags,
    }
}

fn send(fd: &Rc<OwnedFd>, data: &[u8]) -> Op {
    Op::Send {
        fd: fd.clone().into(),
        buf: data.to_vec().into(),
        start: 0,
    }
}

fn timer(d: Duration) -> Op {
    Op::Timer { after: d }
}

/// Runs the driver until `n` completions arrived (bounded), in order.
fn collect(d: &mut EpollDriver, n: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        assert!(
            Instant::now() < end,
            "only {} of {n} completions",
            out.len()
        );
        d.submit_and_wait(1, Some(Duration::from_millis(100)))
            .expect("wait");
        d.reap(&mut out);
    }
    out
}

fn results(c: &[Completion]) -> Vec<(u64, i32)> {
    c.iter().map(|c| (c.token, c.result)).collect()
}

fn data(c: &Completion) -> &[u8] {
    match &c.op {
        Op::Recv { buf, .. } => buf,
        _ => panic!("not a recv"),
    }
}

#[test]
fn send_recv_chain_with_short_recv_runs_the_peek() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, mut peer) = pair();
    let mut ids = Vec::new();
    d.push_chain(
        [
            (send(&fd, b"ping"), 1),
            (recv(&fd, 100, 0), 2),
            (recv(&fd, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT), 3),
        ],
        &mut ids,
    );
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 4];
        peer.read_exact(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        peer.write_all(b"pong").unwrap();
        peer
    });
    let c = collect(&mut d, 3);
    // A short plain recv does not break the link; the probe finds nothing.
    assert_eq!(results(&c), [(1, 4), (2, 4), (3, -libc::EAGAIN)]);
    assert_eq!(data(&c[1]), b"pong");
    assert_eq!(c[1].flags, 0, "no SOCK_NONEMPTY on epoll");
    assert_eq!(d.in_flight(), 0);
    drop(t.join());
}

#[test]
fn peek_nowait_answers_at_once() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, mut peer) = pair();
    d.push(recv(&fd, 8, libc::MSG_PEEK | libc::MSG_DONTWAIT), 7);
    let c = collect(&mut d, 1);
    assert_eq!(results(&c), [(7, -libc::EAGAIN)]);
    peer.write_all(b"abc").unwrap();
    d.push(recv(&fd, 8, libc::MSG_PEEK | libc::MSG_DONTWAIT), 8);
    d.push(recv(&fd, 8, 0), 9);
    let c = collect(&mut d, 2);
    assert_eq!(results(&c), [(8, 3), (9, 3)]);
    assert_eq!((data(&c[0]), data(&c[1])), (&b"abc"[..], &b"abc"[..]));
}

#[test]
fn waitall_recv_waits_for_every_byte_and_breaks_the_link_when_short() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, mut peer) = pair();
    d.push(recv(&fd, 8, libc::MSG_WAITALL), 1);
    peer.write_all(b"1234").unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        peer.write_all(b"5678").unwrap();
        peer
    });
    let c = collect(&mut d, 1);
    assert_eq!((results(&c), data(&c[0])), (vec![(1, 8)], &b"12345678"[..]));
    let mut peer = t.join().unwrap();
    // EOF after 2 of 4: short, so the linked op is cancelled.
    peer.write_all(b"ab").unwrap();
    drop(peer);
    let mut ids = Vec::new();
    d.push_chain(
        [(recv(&fd, 4, libc::MSG_WAITALL), 2), (recv(&fd, 4, 0), 3)],
        &mut ids,
    );
    let c = collect(&mut d, 2);
    assert_eq!(results(&c), [(2, 2), (3, -libc::ECANCELED)]);
}

/// A receive pushed with an empty buffer (as the engine does here)
/// allocates nothing while it waits and grows its buffer as bytes come,
/// a MSG_WAITALL one across several arrivals.
#[test]
fn empty_buffers_grow_as_bytes_arrive() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, mut peer) = pair();
    let empty = |len: u32, flags: i32| Op::Recv {
        fd: fd.clone().into(),
        buf: Vec::new(),
        len,
        flags,
    };
    d.push(empty(8, libc::MSG_WAITALL), 1);
    d.submit_and_wait(0, None).unwrap();
    let waiting = d.slots.iter().find_map(|s| match &s.op {
        Some(Op::Recv { buf, .. }) => Some(buf.capacity()),
        _ => None,
    });
    assert_eq!(waiting, Some(0), "a waiting receive holds no buffer");
    peer.write_all(b"1234").unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        peer.write_all(b"5678abc").unwrap();
        peer
    });
    let c = collect(&mut d, 1);
    assert_eq!((results(&c), data(&c[0])), (vec![(1, 8)], &b"12345678"[..]));
    let _peer = t.join().unwrap();
    d.push(empty(100, 0), 2);
    let c = collect(&mut d, 1);
    assert_eq!((results(&c), data(&c[0])), (vec![(2, 3)], &b"abc"[..]));
}

#[test]
fn failed_head_cancels_the_rest_in_order() {
    let mut d = EpollDriver::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fd = Rc::new(crate::ring::unix_stream_socket().unwrap());
    let addr = super::super::UnixAddr::new(&dir.path().join("nobody")).unwrap();
    let mut ids = Vec::new();
    d.push_chain(
        [
            (
                Op::Connect {
                    fd: fd.clone().into(),
                    addr: Box::new(addr),
                },
                1,
            ),
            (send(&fd, b"hello"), 2),
            (recv(&fd, 4, libc::MSG_WAITALL), 3),
        ],
        &mut ids,
    );
    let c = collect(&mut d, 3);
    assert_eq!(
        results(&c),
        [
            (1, -libc::ENOENT),
            (2, -libc::ECANCELED),
            (3, -libc::ECANCELED)
        ]
    );
    // A peer gone: the send fails with EPIPE (no SIGPIPE), the recv is cancelled.
    let (fd, peer) = pair();
    drop(peer);
    d.push_chain([(send(&fd, b"x"), 4), (recv(&fd, 4, 0), 5)], &mut ids);
    let c = collect(&mut d, 2);
    assert_eq!(results(&c), [(4, -libc::EPIPE), (5, -libc::ECANCELED)]);
}

#[test]
fn connect_succeeds_and_is_refused() {
    let mut d = EpollDriver::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let l = UnixListener::bind(&path).unwrap();
    let fd = Rc::new(crate::ring::unix_stream_socket().unwrap());
    let addr = super::super::UnixAddr::new(&path).unwrap();
    d.push(
        Op::Connect {
            fd: fd.into(),
            addr: Box::new(addr.clone()),
        },
        1,
    );
    assert_eq!(results(&collect(&mut d, 1)), [(1, 0)]);
    drop(l);
    let fd = Rc::new(crate::ring::unix_stream_socket().unwrap());
    d.push(
        Op::Connect {
            fd: fd.into(),
            addr: Box::new(addr),
        },
        2,
    );
    assert_eq!(results(&collect(&mut d, 1)), [(2, -libc::ECONNREFUSED)]);
}

#[test]
fn big_send_waits_for_room() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, mut peer) = pair();
    let big: Vec<u8> = (0..4 << 20).map(|i| i as u8).collect();
    d.push(send(&fd, &big), 1);
    let want = big.clone();
    let t = std::thread::spawn(move || {
        let mut got = vec![0u8; want.len()];
        peer.read_exact(&mut got).unwrap();
        assert!(got == want, "bytes intact");
    });
    assert_eq!(results(&collect(&mut d, 1)), [(1, 4 << 20)]);
    t.join().unwrap();
}

#[test]
fn cancel_a_waiting_recv_and_its_successors() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, mut peer) = pair();
    let mut ids = Vec::new();
    d.push_chain(
        [
            (recv(&fd, 8, 0), 1),
            (recv(&fd, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT), 2),
        ],
        &mut ids,
    );
    d.submit_and_wait(0, None).unwrap();
    let mut out = Vec::new();
    d.reap(&mut out);
    assert!(out.is_empty(), "the recv waits");
    // Cancelling a linked, not started op does nothing (ENOENT on io_uring).
    d.cancel(ids[1]);
    d.cancel(ids[0]);
    let c = collect(&mut d, 2);
    assert_eq!(results(&c), [(1, -libc::ECANCELED), (2, -libc::ECANCELED)]);
    // Cancelling a completed op: nothing, and the next recv gets the data.
    d.cancel(ids[0]);
    peer.write_all(b"late").unwrap();
    d.push(recv(&fd, 8, 0), 3);
    let c = collect(&mut d, 1);
    assert_eq!((results(&c), data(&c[0])), (vec![(3, 4)], &b"late"[..]));
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn timers_fire_in_deadline_order_and_cancel() {
    let mut d = EpollDriver::new().unwrap();
    let t0 = Instant::now();
    d.push(timer(Duration::from_millis(60)), 1);
    let id = d.push(timer(Duration::from_secs(30)), 2);
    d.push(timer(Duration::from_millis(20)), 3);
    let c = collect(&mut d, 2);
    assert_eq!(results(&c), [(3, -libc::ETIME), (1, -libc::ETIME)]);
    assert!(t0.elapsed() >= Duration::from_millis(60));
    d.cancel(id);
    let c = collect(&mut d, 1);
    assert_eq!(results(&c), [(2, -libc::ECANCELED)]);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// The driver's thread away (preempted on a loaded machine) while a
/// receive's data arrives and, later, the deadline guarding it passes:
/// when the driver looks again, the receive completes before the timer,
/// as io_uring, which sees both as they happen, would order them.
#[test]
fn data_that_arrived_while_away_beats_a_timer_that_expired_meanwhile() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, mut peer) = pair();
    d.push(recv(&fd, 4, libc::MSG_WAITALL), 1);
    d.push(timer(Duration::from_millis(20)), 2);
    d.submit_and_wait(0, None).unwrap();
    assert_eq!(d.in_flight(), 2, "the receive waits, the timer runs");
    peer.write_all(b"ansr").unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let c = collect(&mut d, 2);
    assert_eq!(results(&c), [(1, 4), (2, -libc::ETIME)]);
    assert_eq!(data(&c[0]), b"ansr");
}

/// The same with more ready descriptors than one `epoll_wait` returns:
/// every receive whose data was there completes before the timer.
#[test]
fn all_data_that_arrived_while_away_beats_the_timer_not_just_one_batch() {
    const N: usize = EVENTS_MAX + 40;
    let mut d = EpollDriver::new().unwrap();
    let pairs: Vec<_> = (0..N).map(|_| pair()).collect();
    for (i, (fd, _)) in pairs.iter().enumerate() {
        d.push(recv(fd, 1, 0), i as u64);
    }
    d.push(timer(Duration::from_millis(20)), N as u64);
    d.submit_and_wait(0, None).unwrap();
    assert_eq!(d.in_flight(), N + 1);
    for (_, peer) in &pairs {
        (&*peer).write_all(b"x").unwrap();
    }
    std::thread::sleep(Duration::from_millis(60));
    let c = collect(&mut d, N + 1);
    let last = c.last().map(|c| (c.token, c.result));
    assert_eq!(last, Some((N as u64, -libc::ETIME)), "the timer comes last");
    assert!(c[..N].iter().all(|c| c.result == 1));
}

#[test]
fn wake_interrupts_the_wait() {
    let mut d = EpollDriver::new().unwrap();
    let (fd, _peer) = pair();
    d.push(recv(&fd, 8, 0), 1); // never completes
    let wake = d.wake_handle();
    wake.prepare_park();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        wake.wake();
    });
    let t0 = Instant::now();
    d.submit_and_wait(1, Some(Duration::from_secs(10))).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "woken, not timed out"
    );
    t.join().unwrap();
}

#[test]
fn no_registered_buffers() {
    let mut d = EpollDriver::new().unwrap();
    assert!(d.reg_alloc().is_none());
    assert_eq!(d.reg_slot_bytes(), 0);
    assert!(!d.features().sock_nonempty);
    assert_eq!(d.backend(), Backend::Epoll);
}

/// An op that names its socket by number only (`Sock::Kept`) is refused
/// with EOPNOTSUPP, never run: this driver tells a reused number by the
/// op's hold, and says so (`Features::kept_sockets` is false).
#[test]
fn an_op_on_a_kept_socket_is_refused() {
    let mut d = EpollDriver::new().unwrap();
    assert!(!d.features().kept_sockets);
    let (fd, mut peer) = pair();
    let op = Op::Send {
        fd: Sock::Kept(fd.as_raw_fd()),
        buf: b"no".to_vec().into(),
        start: 0,
    };
    d.push(op, 1);
    let c = collect(&mut d, 1);
    assert_eq!(results(&c), [(1, -libc::EOPNOTSUPP)]);
    peer.set_nonblocking(true).unwrap();
    let mut got = [0u8; 4];
    assert!(peer.read(&mut got).is_err(), "nothing was sent");
}
