//! Panic containment for connection tasks: a panic anywhere in a session
//! (ours or a dependency's) must not leak what the session holds. The task
//! future runs inside [`CatchUnwind`]; when it panics the future is dropped
//! at once, so every drop guard it owns runs (router slot, gauges,
//! presence, registry entry, connection permit), and the panic is counted
//! and logged as one line instead of a backtrace.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus::IntGauge;

/// A future that turns a panic while polling `F` into `Err(message)`.
pub(crate) struct CatchUnwind<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> CatchUnwind<F> {
        CatchUnwind {
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                self.inner = None;
                Poll::Ready(Ok(v))
            }
            Err(payload) => {
                // Drop the half-run future now: its guards release the
                // session's state. A panic inside a destructor is caught
                // too (it must not take the worker thread down).
                let inner = self.inner.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(inner)));
                Poll::Ready(Err(panic_message(&*payload)))
            }
        }
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a
/// `String`), escaped for a log line.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "(no message)"
    };
    text.escape_debug().to_string()
}

/// Increments a gauge now and decrements it when dropped, however the
/// owner ends.
#[derive(Debug)]
pub(crate) struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub(crate) fn new(gauge: IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Replaces the default panic output (a multi-line backtrace on stderr)
/// with one escaped log line naming the thread and the location. Panics of
/// connection tasks are then also counted by [`CatchUnwind`]'s caller; a
/// panic of the router thread is seen by the router watchdog.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            %location,
            panic = %panic_message(info.payload()),
            "panic"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_panic_is_returned_and_the_future_state_dropped() {
        let dropped = Arc::new(AtomicBool::new(false));
        let gauge = IntGauge::new("g", "g").unwrap();
        let guard_dropped = dropped.clone();
        let g = gauge.clone();
        let r = CatchUnwind::new(async move {
            let _held = SetOnDrop(guard_dropped);
            let _open = GaugeGuard::new(g);
            tokio::task::yield_now().await;
            panic!("boom\nforged line");
        })
        .await;
        assert_eq!(r, Err("boom\\nforged line".to_owned()));
        assert!(dropped.load(Ordering::SeqCst), "guards ran");
        assert_eq!(gauge.get(), 0, "gauge released");
    }

    #[tokio::test]
    async fn a_normal_end_passes_the_value() {
        assert_eq!(CatchUnwind::new(async { 7 }).await, Ok(7));
    }
}
