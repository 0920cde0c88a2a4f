//! A worker thread: one current-thread runtime, one `SO_REUSEPORT`
//! listener, and one loop that takes batches from the hub, accepts new
//! connections and runs the worker's tick, until shutdown.

use super::accept;
use super::context::Context;
use super::hub::Message;
use super::worker::Worker;
use crate::net::accept::Acceptor;
use slog::error;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

/// A task a worker runs beside its clients (the Redis subscriber runs on
/// worker 0, so that a message goes from Redis to the sockets on one
/// thread).
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What one worker thread is given.
pub struct Parts {
    pub id: usize,
    pub listener: std::net::TcpListener,
    pub frames: mpsc::Receiver<Message>,
    pub shutdown: watch::Receiver<bool>,
    pub ctx: Arc<Context>,
    pub beside: Option<Task>,
}

/// Starts a worker on its own thread; it runs until `shutdown` turns true
/// and its clients are closed (or the shutdown deadline passes). The
/// runtime is built here, before the thread starts, so that a failure to
/// build it is a start-up error rather than a panic on a thread.
pub fn spawn(parts: Parts) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("worker-{}", parts.id))
        .spawn(move || run_thread(rt, parts))
}

fn run_thread(rt: Runtime, parts: Parts) {
    let local = tokio::task::LocalSet::new();
    // Ends with the runtime, when the worker has drained.
    if let Some(task) = parts.beside {
        rt.spawn(task);
    }
    let (id, log) = (parts.id, parts.ctx.log.clone());
    let worker = run(
        parts.id,
        parts.listener,
        parts.frames,
        parts.shutdown,
        parts.ctx,
    );
    let ended = std::panic::catch_unwind(AssertUnwindSafe(|| local.block_on(&rt, worker)));
    if ended.is_err() {
        // A panic in a connection's task ends only that task; one in the
        // worker's own loop (a bug) would leave its clients and its share
        // of new connections unserved while the process looks alive. Exit
        // instead, for the supervisor to restart.
        error!(
            log,
            "[worker] worker {id} failed (see the panic above); exiting"
        );
        std::process::exit(70);
    }
}

async fn run(
    id: usize,
    listener: std::net::TcpListener,
    mut frames: mpsc::Receiver<Message>,
    mut shutdown: watch::Receiver<bool>,
    ctx: Arc<Context>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => panic!("worker {id}: the listener cannot join the runtime: {e}"),
    };
    let mut acceptor = Acceptor::new(listener, "[accept]", ctx.log.clone());
    let w = Rc::new(Worker::new(id, ctx));
    let mut batch = Vec::with_capacity(super::conn::MAX_IOV);
    let mut reloads = w.ctx.channels.watch();
    let mut tick = tokio::time::interval(w.tick_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            n = frames.recv_many(&mut batch, super::conn::MAX_IOV) => {
                if n == 0 {
                    break;
                }
                w.fan_out(&batch);
                batch.clear();
            }
            _ = tick.tick() => w.housekeeping(),
            Ok(()) = reloads.changed() => w.channels_changed(),
            (stream, addr) = acceptor.next() => {
                tokio::task::spawn_local(accept::serve(stream, addr, w.clone()));
            }
        }
    }
    drop(acceptor);
    w.drain().await;
}
