//! A sub-millisecond sleep for the open-loop pacer. tokio's timer wheel has 1 ms
//! granularity, far too coarse for 20,000+ evenly spaced sends per second; spinning
//! instead burns the client's core and gets it preempted for whole scheduler slices when
//! anything else runs. A timerfd (an hrtimer) registered with the runtime's epoll wakes
//! the task within microseconds, and the thread's timer slack is lowered to 1 us.

use anyhow::{Context as _, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

pub struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    /// Must be called on the runtime thread that will await it (current-thread runtime):
    /// the timer slack is per thread.
    pub fn new() -> Result<Self> {
        // SAFETY: plain syscalls; the returned descriptor is owned right away.
        let raw = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("timerfd_create");
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd keeps returning the same open descriptor until dropped, and
        // the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the timerfd: {e}"))?;
        Ok(Self { fd })
    }

    /// Sleeps for `d` (returns at once for zero).
    pub async fn sleep(&self, d: Duration) -> Result<()> {
        if d.is_zero() {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: arming our own timerfd with a valid itimerspec.
        if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("timerfd_settime");
        }
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .context("waiting for the timerfd")?;
            let mut expirations = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from our own descriptor.
            let n = unsafe { libc::read(fd, expirations.as_mut_ptr().cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn sleeps_briefly_and_precisely() {
        let t = Timer::new().unwrap();
        for us in [0u64, 50, 200, 1500] {
            let start = std::time::Instant::now();
            t.sleep(Duration::from_micros(us)).await.unwrap();
            let took = start.elapsed();
            assert!(took >= Duration::from_micros(us), "{us}us took {took:?}");
            assert!(
                took < Duration::from_micros(us) + Duration::from_millis(50),
                "{us}us took {took:?}"
            );
        }
    }
}
