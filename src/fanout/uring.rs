//! The io_uring send path (`-io=uring`): the sends of a whole fan-out go to
//! the kernel in one `io_uring_enter` instead of one `writev` per client.
//!
//! Reads, accepts and the writes of clients that fell behind stay on tokio
//! (epoll). Only the fan-out's direct writes — the hot path, one per client
//! per batch — are batched here. Every send carries `MSG_DONTWAIT`, so the
//! kernel completes it inline during the enter (or fails it with `EAGAIN`)
//! instead of parking it: when the enter returns, every completion is in
//! the ring, the borrowed message headers are free again, and each client
//! is handled exactly as after a `writev` (queue the rest, or close).
//!
//! A thin layer over the `io-uring` crate rather than `tokio-uring`: the
//! latter turns each send into a future and a task wake-up, which is per
//! delivery work the fan-out exists to avoid.

use io_uring::{opcode, types, IoUring};
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Sends handed to the kernel per `io_uring_enter` at most.
const ENTRIES: u32 = 1024;

/// The batch of frames one group of clients gets, as `sendmsg` sees it.
pub struct Message<'a> {
    header: libc::msghdr,
    /// Keeps the slices borrowed while `header` points at them.
    _slices: &'a [IoSlice<'a>],
}

impl<'a> Message<'a> {
    pub fn new(slices: &'a [IoSlice<'a>]) -> Message<'a> {
        // SAFETY: msghdr is plain data (integers and raw pointers), for
        // which all-zero bytes are a valid value: no name, no control data.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec on Unix (std guarantees it),
        // and `_slices` keeps the slices borrowed for as long as `header`
        // points at them.
        header.msg_iov = slices.as_ptr() as *mut libc::iovec;
        header.msg_iovlen = slices.len() as _;
        Message {
            header,
            _slices: slices,
        }
    }
}

/// `io_uring_enter` errors that only mean "try again".
fn retry(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

/// Aborts the process when dropped, that is when a panic unwinds through
/// [`Ring::send_all`] (from `done`, or a failed enter): unwinding would free
/// the frames and iovecs that sends still in flight point at, and the
/// kernel could then read freed memory. `send_all` forgets it on the way
/// out, once every send is complete.
struct Armed;

impl Drop for Armed {
    fn drop(&mut self) {
        eprintln!("pubsocketd: a panic with io_uring sends in flight; aborting");
        std::process::abort();
    }
}

/// One send to make: which socket, which message, and a token handed back
/// with its result.
#[derive(Clone, Copy)]
pub struct Send {
    pub fd: RawFd,
    pub message: usize,
    pub token: usize,
}

/// A worker's ring, used only for sends.
pub struct Ring {
    ring: IoUring,
}

impl Ring {
    /// Sets up a ring; fails where io_uring is not allowed (seccomp,
    /// `kernel.io_uring_disabled`, old kernels).
    pub fn new() -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_submit_all()
            .build(ENTRIES)
            .or_else(|_| IoUring::new(ENTRIES))?;
        Ok(Ring { ring })
    }

    /// Makes every send in `sends`, `ENTRIES` per enter, and calls `done`
    /// with each one's token and result (bytes written, or the error).
    /// Results come in completion order, which may differ from `sends`.
    pub fn send_all(
        &mut self,
        messages: &[Message<'_>],
        sends: impl Iterator<Item = Send>,
        mut done: impl FnMut(usize, io::Result<usize>),
    ) {
        let armed = Armed;
        let mut pending = 0;
        for s in sends {
            let entry = opcode::SendMsg::new(types::Fd(s.fd), &messages[s.message].header)
                .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
                .build()
                .user_data(s.token as u64);
            // SAFETY: the entry points at a message header, and through it
            // at iovecs and frame bytes, that `messages` borrows until this
            // call returns; every send is complete before it does (`flush`
            // reaps one completion per push, and a panic in between aborts
            // instead of unwinding: see `Armed`). The socket `s.fd` stays
            // open for as long: the caller (the worker) holds its `conns`,
            // and with them every client's stream, borrowed across the
            // batch, so no client can be dropped and its descriptor closed
            // or reused while the kernel may still use it.
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.flush(pending, &mut done);
                pending = 0;
            }
            pending += 1;
        }
        self.flush(pending, &mut done);
        std::mem::forget(armed);
    }

    /// Submits what is queued and waits for `pending` completions. With
    /// `MSG_DONTWAIT` none of them waits on a socket, so this returns as
    /// soon as the kernel has run them.
    fn flush(&mut self, pending: usize, done: &mut impl FnMut(usize, io::Result<usize>)) {
        if pending == 0 {
            return;
        }
        let mut reaped = 0;
        while reaped < pending {
            match self.ring.submit_and_wait(pending - reaped) {
                Ok(_) => {}
                Err(e) if retry(&e) => {}
                // The sends may still point at the caller's frames: there
                // is no safe way on, only out (`Armed` aborts the process).
                Err(e) => panic!("io_uring_enter failed with sends in flight: {e}"),
            }
            for cqe in self.ring.completion() {
                reaped += 1;
                let r = cqe.result();
                let result = if r >= 0 {
                    Ok(r as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-r))
                };
                done(cqe.user_data() as usize, result);
            }
        }
    }
}
