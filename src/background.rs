//! Work that must not take CPU from the client's path: a thread of its own
//! at a lower CPU priority (a higher `nice`), polling each future with the
//! main runtime as its context. Where CPU is short, the kernel runs the
//! client's path first and this work waits. The sockets, timers and
//! connection tasks the work makes belong to the main runtime, whose
//! threads drive them: a starved background thread never holds up a
//! connection the client's path shares.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Background {
    /// The thread's own runtime: one thread, no I/O or timer driver.
    runtime: Handle,
    main: Handle,
    /// Dropped with `Background`: the thread's runtime stops, and the thread ends.
    _stop: oneshot::Sender<()>,
}

impl Background {
    /// Starts the thread at `nice` (0 to 19: 19 runs only what nothing
    /// else wants the CPU for); called from within the main runtime.
    pub fn start(name: &str, nice: i32) -> std::io::Result<Background> {
        let main = Handle::current();
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // On Linux a priority is a thread's own: this one's only.
                let thread = rustix::thread::gettid();
                if let Err(err) = rustix::process::setpriority_process(Some(thread), nice) {
                    tracing::warn!(%err, nice, "background work runs at the process's CPU priority");
                }
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Background {
            runtime: handle,
            main,
            _stop: stop,
        })
    }

    /// Runs `work` on the background thread, with the main runtime as its context.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(InContext {
            main: self.main.clone(),
            work: Box::pin(work),
        });
    }
}

/// A future polled with `main` as the current runtime.
struct InContext {
    main: Handle,
    work: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Future for InContext {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let _context = this.main.enter();
        this.work.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_at_its_priority_on_the_main_runtimes_drivers() {
        let background = Background::start("test-background", 19).unwrap();
        let (done, report) = oneshot::channel();
        background.spawn(async move {
            // A socket and a timer: made on the main runtime's drivers, as
            // the background runtime has none of its own.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
            tokio::net::TcpStream::connect(address).await.unwrap();
            accepted.await.unwrap().unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let thread = std::thread::current().name().map(str::to_owned);
            let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid()));
            done.send((thread, nice.unwrap())).unwrap();
        });
        let (thread, nice) = report.await.unwrap();
        assert_eq!(thread.as_deref(), Some("test-background"));
        assert_eq!(nice, 19);
        assert_eq!(
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap(),
            0,
            "the main runtime's threads keep their priority"
        );
    }
}
