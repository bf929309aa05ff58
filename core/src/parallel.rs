//! Splitting large per-coordinate work across the machine's cores with scoped threads
//! (no thread pool dependency). Small inputs stay on the calling thread.

/// Below this many elements a second thread costs more than it saves.
const PARALLEL_MIN_LEN: usize = 1 << 16;

pub fn threads_for(len: usize) -> usize {
    if len < PARALLEL_MIN_LEN {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(len / (PARALLEL_MIN_LEN / 2)).max(1)
}

/// Splits 0..len into one contiguous range per thread that is worth using.
pub fn split(len: usize) -> Vec<std::ops::Range<usize>> {
    let threads = threads_for(len);
    let per = len.div_ceil(threads).max(1);
    (0..len).step_by(per).map(|start| start..(start + per).min(len)).collect()
}

/// Runs `work(offset, chunk)` over disjoint chunks of `out`, in parallel when `out` is large.
pub fn for_each_chunk_mut<T: Send>(out: &mut [T], work: impl Fn(usize, &mut [T]) + Sync) {
    let threads = threads_for(out.len());
    if threads <= 1 {
        work(0, out);
        return;
    }
    let chunk = out.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, part) in out.chunks_mut(chunk).enumerate() {
            let work = &work;
            scope.spawn(move || work(i * chunk, part));
        }
    });
}

/// Maps `f` over `items` in parallel (one item per task, items are whole vectors), keeping
/// the order. Used when each item is itself a large vector.
pub fn map_items<I: Sync, R: Send>(items: &[I], item_len: usize, f: impl Fn(&I) -> R + Sync) -> Vec<R> {
    let threads = threads_for(item_len.saturating_mul(items.len())).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| {
                let f = &f;
                scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("decoder worker thread panicked")).collect()
    })
}
