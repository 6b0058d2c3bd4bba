//! Running a network evaluation on rayon's thread pool.

/// Runs `f` on a thread of rayon's pool, directly when already on one. A network's parallel
/// parts then start from a running pool thread; called from outside the pool (the engine's
/// thread, `bench`), each would put the caller to sleep and wake the pool, and on a virtual
/// machine such wake-ups cost up to half a millisecond per product after a serial stretch.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_handed_to_the_pool_runs_on_a_pool_thread() {
        std::thread::spawn(|| {
            assert_eq!(rayon::current_thread_index(), None);
            assert!(on_pool(rayon::current_thread_index).is_some());
        })
        .join()
        .unwrap();
    }
}
