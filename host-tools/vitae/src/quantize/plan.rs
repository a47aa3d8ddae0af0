//! The static arena plan: every activation and every kernel scratch gets a fixed offset, so the
//! device needs one buffer of a known size and never allocates.
//!
//! Buffers live from the op that writes them to the last op that reads them. Offsets are
//! assigned greedily, largest buffer first, at the lowest offset that does not collide with a
//! buffer placed earlier whose lifetime overlaps (TFLM's greedy planner). The lower bound is the
//! largest total of simultaneously live bytes: no plan with this op order can use less.

/// One buffer to place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Bytes.
    pub size: usize,
    /// First op index that uses it (inclusive).
    pub first: usize,
    /// Last op index that uses it (inclusive).
    pub last: usize,
}

/// The result: an offset per buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Offset of each buffer, in input order.
    pub offsets: Vec<usize>,
    /// Arena bytes needed.
    pub arena_len: usize,
    /// Largest simultaneously live total.
    pub lower_bound: usize,
}

/// Alignment of every offset (the blob's ALIGN).
pub const ALIGN: usize = vitae_edge::format::ALIGN;

fn aligned(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Places the buffers.
pub fn plan(buffers: &[Buffer]) -> Plan {
    let ops = buffers.iter().map(|b| b.last + 1).max().unwrap_or(0);
    let mut live = vec![0usize; ops];
    for b in buffers {
        for l in &mut live[b.first..=b.last] {
            *l += aligned(b.size);
        }
    }
    let lower_bound = live.iter().copied().max().unwrap_or(0);

    // Greedy placement depends on the order buffers are placed in; a few orders are tried, with
    // first fit and best fit, and the smallest arena wins (each try is buffers × placed work).
    type Key = fn(&Buffer) -> (usize, usize);
    let keys: [Key; 4] = [
        |b| (usize::MAX - aligned(b.size), b.first),
        |b| {
            (
                usize::MAX - aligned(b.size) * (b.last - b.first + 1),
                b.first,
            )
        },
        |b| (b.first, usize::MAX - aligned(b.size)),
        |b| {
            (
                usize::MAX - (b.last - b.first),
                usize::MAX - aligned(b.size),
            )
        },
    ];
    let mut best: Option<(usize, Vec<usize>)> = None;
    for key in keys {
        for best_fit in [false, true] {
            let mut order: Vec<usize> = (0..buffers.len()).collect();
            order.sort_by_key(|&i| (key(&buffers[i]), i));
            let (len, offsets) = place(buffers, &order, best_fit);
            if best.as_ref().is_none_or(|(l, _)| len < *l) {
                best = Some((len, offsets));
            }
        }
    }
    let (arena_len, offsets) = best.unwrap_or_default();
    Plan {
        offsets,
        arena_len,
        lower_bound,
    }
}

/// Places buffers in `order`, each at the lowest offset (first fit) or in the tightest gap (best
/// fit) that is free over its lifetime. Returns the arena length and the offsets.
fn place(buffers: &[Buffer], order: &[usize], best_fit: bool) -> (usize, Vec<usize>) {
    let mut offsets = vec![0usize; buffers.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut arena_len = 0;
    for &i in order {
        let b = buffers[i];
        let size = aligned(b.size);
        if size == 0 {
            continue;
        }
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| buffers[j].first <= b.last && b.first <= buffers[j].last)
            .map(|&j| (offsets[j], offsets[j] + aligned(buffers[j].size)))
            .collect();
        busy.sort();
        // Free gaps between the busy intervals, and the open end after the last one.
        let mut gaps = Vec::new();
        let mut at = 0;
        for (start, end) in busy {
            if start >= at + size {
                gaps.push((at, start - at));
            }
            at = at.max(end);
        }
        gaps.push((at, usize::MAX));
        let chosen = if best_fit {
            gaps.iter().min_by_key(|g| (g.1, g.0))
        } else {
            gaps.first()
        };
        offsets[i] = chosen.map_or(at, |g| g.0);
        arena_len = arena_len.max(offsets[i] + size);
        placed.push(i);
    }
    (arena_len, offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_no_collision(buffers: &[Buffer], p: &Plan) {
        for (i, a) in buffers.iter().enumerate() {
            for (j, b) in buffers.iter().enumerate().skip(i + 1) {
                let time = a.first <= b.last && b.first <= a.last;
                let (ai, bi) = (p.offsets[i], p.offsets[j]);
                let space = ai < bi + b.size && bi < ai + a.size && a.size > 0 && b.size > 0;
                assert!(!(time && space), "buffers {i} and {j} collide");
            }
            assert!(p.offsets[i] + a.size <= p.arena_len);
            assert_eq!(p.offsets[i] % ALIGN, 0);
        }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // x0 -> x1 -> x2 -> x3: at most two live at once.
        let b: Vec<Buffer> = (0..4)
            .map(|i| Buffer {
                size: 100,
                first: i,
                last: i + 1,
            })
            .collect();
        let p = plan(&b);
        check_no_collision(&b, &p);
        assert_eq!(p.lower_bound, 224);
        assert_eq!(p.arena_len, 224);
    }

    #[test]
    fn random_lifetimes_never_collide() {
        let mut s = 12345u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..50 {
            let b: Vec<Buffer> = (0..30)
                .map(|_| {
                    let first = (next() % 20) as usize;
                    Buffer {
                        size: (next() % 5000) as usize,
                        first,
                        last: first + (next() % 6) as usize,
                    }
                })
                .collect();
            let p = plan(&b);
            check_no_collision(&b, &p);
            assert!(p.arena_len >= p.lower_bound);
        }
    }
}
