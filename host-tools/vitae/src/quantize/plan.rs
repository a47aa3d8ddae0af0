//! The static arena plan: every activation and every kernel scratch gets a fixed offset, so the
//! device needs one buffer of a known size and never allocates.
//!
//! Buffers live from the op that writes them to the last op that reads them. Offsets are
//! assigned greedily, largest buffer first, at the lowest offset that does not collide with a
//! buffer placed earlier whose lifetime overlaps (TFLM's greedy planner). The lower bound is the
//! largest total of simultaneously live bytes: no plan with this op order can use less.
//!
//! For a board whose memory is split into regions ([`plan_in_regions`]), the arena becomes one
//! part per region, fastest region first: each buffer goes to the first region with room for it
//! over its lifetime, so the fast memories fill first and a buffer never straddles two regions.

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
    /// Where each part of the arena begins after the first (the blob's `arena_splits`); empty
    /// for one part.
    pub splits: Vec<usize>,
}

/// A memory the arena may use, for [`plan_in_regions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its name (for messages).
    pub name: String,
    /// Bytes the arena may take in it.
    pub room: usize,
}

/// Why [`plan_in_regions`] found no plan: a buffer that fits in no region beside the buffers
/// already placed, in the placement order that got furthest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoom {
    /// The buffer (an index into the planned buffers).
    pub buffer: usize,
    /// Largest simultaneously live total (the regions' total room must hold at least this).
    pub lower_bound: usize,
}

/// Bytes of the smallest part: a region no buffer uses still gets a part, so part `i` is always
/// region `i` (the blob's splits rise strictly).
const EMPTY_PART: usize = ALIGN;

/// Alignment of every offset (the blob's ALIGN).
pub const ALIGN: usize = vitae_edge::format::ALIGN;

fn aligned(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Places the buffers in one contiguous arena.
pub fn plan(buffers: &[Buffer]) -> Plan {
    let unbounded = [usize::MAX];
    match plan_parts(buffers, &unbounded) {
        Ok(p) => p,
        Err(_) => unreachable!("an unbounded region has room for every buffer"),
    }
}

/// Places the buffers in `regions` (fastest first), one arena part per region, or says which
/// buffer found no room. One region gives the same plan as [`plan`].
/// No regions is one contiguous arena, as [`plan`]. A region with less than 16 bytes of room
/// takes no buffer (its part still needs 16 bytes, see `EMPTY_PART`): give regions with room.
pub fn plan_in_regions(buffers: &[Buffer], regions: &[Region]) -> Result<Plan, NoRoom> {
    if regions.is_empty() {
        return Ok(plan(buffers));
    }
    let rooms: Vec<usize> = regions.iter().map(|r| r.room).collect();
    plan_parts(buffers, &rooms)
}

fn plan_parts(buffers: &[Buffer], rooms: &[usize]) -> Result<Plan, NoRoom> {
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
    // The smallest arena wins; between equal ones, the one with the most bytes in the fastest
    // regions. When no order fits, the failure of the order that placed the most buffers tells.
    let mut best: Option<(usize, Vec<usize>, Placement)> = None;
    let mut failure: Option<(usize, usize)> = None;
    for key in keys {
        for best_fit in [false, true] {
            let mut order: Vec<usize> = (0..buffers.len()).collect();
            order.sort_by_key(|&i| (key(&buffers[i]), i));
            match place(buffers, &order, best_fit, rooms) {
                Ok(p) => {
                    let total: usize = p.part_lens.iter().sum();
                    let rank: Vec<usize> = p.part_lens.iter().map(|l| usize::MAX - l).collect();
                    if best
                        .as_ref()
                        .is_none_or(|(t, r, _)| (total, &rank) < (*t, r))
                    {
                        best = Some((total, rank, p));
                    }
                }
                Err((placed, buffer)) => {
                    if failure.is_none_or(|(most, _)| placed > most) {
                        failure = Some((placed, buffer));
                    }
                }
            }
        }
    }
    let Some((arena_len, _, placement)) = best else {
        let buffer = failure.map_or(0, |(_, b)| b);
        return Err(NoRoom {
            buffer,
            lower_bound,
        });
    };
    // Part i starts where the parts before it end.
    let mut starts = vec![0usize; rooms.len()];
    for i in 1..rooms.len() {
        starts[i] = starts[i - 1] + placement.part_lens[i - 1];
    }
    let offsets = placement
        .offsets
        .iter()
        .zip(&placement.parts)
        .map(|(&o, &part)| starts[part] + o)
        .collect();
    Ok(Plan {
        offsets,
        arena_len,
        lower_bound,
        splits: starts[1..].to_vec(),
    })
}

/// Buffers placed in regions: each one's part and offset within it, and each part's length.
struct Placement {
    parts: Vec<usize>,
    offsets: Vec<usize>,
    part_lens: Vec<usize>,
}

/// Places buffers in `order`, each in the first region with room and there at the lowest offset
/// (first fit) or in the tightest gap (best fit) that is free over its lifetime. A buffer that
/// fits no region gives `Err((buffers placed before it, that buffer))`.
fn place(
    buffers: &[Buffer],
    order: &[usize],
    best_fit: bool,
    rooms: &[usize],
) -> Result<Placement, (usize, usize)> {
    let mut parts = vec![0usize; buffers.len()];
    let mut offsets = vec![0usize; buffers.len()];
    let mut placed: Vec<usize> = Vec::new();
    // Parts are never empty (see EMPTY_PART); one unbounded region stays as `plan` always was.
    let mut part_lens = vec![if rooms.len() > 1 { EMPTY_PART } else { 0 }; rooms.len()];
    for (n, &i) in order.iter().enumerate() {
        let b = buffers[i];
        let size = aligned(b.size);
        if size == 0 {
            continue;
        }
        let spot = rooms.iter().enumerate().find_map(|(part, &room)| {
            let busy: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&j| parts[j] == part)
                .filter(|&&j| buffers[j].first <= b.last && b.first <= buffers[j].last)
                .map(|&j| (offsets[j], offsets[j] + aligned(buffers[j].size)))
                .collect();
            gap(busy, size, room, best_fit).map(|offset| (part, offset))
        });
        let Some((part, offset)) = spot else {
            return Err((n, i));
        };
        parts[i] = part;
        offsets[i] = offset;
        part_lens[part] = part_lens[part].max(offset + size);
        placed.push(i);
    }
    Ok(Placement {
        parts,
        offsets,
        part_lens,
    })
}

/// Where `size` bytes go among the `busy` intervals of a region of `room` bytes: the lowest free
/// offset (first fit) or the tightest free gap (best fit); `None` when no gap holds them.
fn gap(mut busy: Vec<(usize, usize)>, size: usize, room: usize, best_fit: bool) -> Option<usize> {
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
    if room.checked_sub(size).is_some_and(|last| at <= last) {
        gaps.push((at, room - at));
    }
    if best_fit {
        gaps.iter().min_by_key(|g| (g.1, g.0)).map(|g| g.0)
    } else {
        gaps.first().map(|g| g.0)
    }
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

    fn region(name: &str, room: usize) -> Region {
        Region {
            name: name.into(),
            room,
        }
    }

    /// Every buffer lies inside one part, within its region's room, and no two collide.
    fn check_regions(buffers: &[Buffer], regions: &[Region], p: &Plan) {
        check_no_collision(buffers, p);
        let starts: Vec<usize> = [0].into_iter().chain(p.splits.iter().copied()).collect();
        assert_eq!(starts.len(), regions.len());
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
        for (i, b) in buffers.iter().enumerate().filter(|(_, b)| b.size > 0) {
            let part = starts.iter().rposition(|&s| s <= p.offsets[i]).unwrap();
            let end = starts.get(part + 1).copied().unwrap_or(p.arena_len);
            assert!(p.offsets[i] + b.size <= end, "buffer {i} crosses a split");
            assert!(p.offsets[i] + b.size - starts[part] <= regions[part].room);
        }
    }

    #[test]
    fn one_unbounded_region_is_the_plain_plan() {
        let b: Vec<Buffer> = (0..4)
            .map(|i| Buffer {
                size: 100 + 40 * i,
                first: i,
                last: i + 1,
            })
            .collect();
        let p = plan_in_regions(&b, &[region("RAM", usize::MAX)]).unwrap();
        assert_eq!(p, plan(&b));
        assert!(p.splits.is_empty());
    }

    #[test]
    fn regions_fill_fastest_first_and_spill_over() {
        // Two buffers live together, 96 bytes each: a 128-byte fast region holds one of them.
        let b = [
            Buffer {
                size: 96,
                first: 0,
                last: 1,
            },
            Buffer {
                size: 96,
                first: 1,
                last: 2,
            },
        ];
        let regions = [region("TCM", 128), region("SRAM", 1024)];
        let p = plan_in_regions(&b, &regions).unwrap();
        check_regions(&b, &regions, &p);
        assert_eq!(p.splits, vec![96]);
        assert_eq!(p.arena_len, 96 + 96);
        // A region no buffer needs still gets its (smallest) part, so parts map to regions.
        let three = [
            region("TCM", 1024),
            region("SRAM", 1024),
            region("EXT", 1024),
        ];
        let p = plan_in_regions(&b, &three).unwrap();
        check_regions(&b, &three, &p);
        assert_eq!(p.splits, vec![192, 192 + EMPTY_PART]);
    }

    #[test]
    fn a_buffer_larger_than_every_region_is_named() {
        let b = [
            Buffer {
                size: 64,
                first: 0,
                last: 0,
            },
            Buffer {
                size: 300,
                first: 0,
                last: 1,
            },
        ];
        let e = plan_in_regions(&b, &[region("A", 256), region("B", 256)]).unwrap_err();
        assert_eq!(e.buffer, 1);
        assert_eq!(e.lower_bound, 64 + 304);
    }

    #[test]
    fn random_lifetimes_in_regions_never_collide_or_overflow() {
        let mut s = 777u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut planned = 0;
        for _ in 0..100 {
            let b: Vec<Buffer> = (0..25)
                .map(|_| {
                    let first = (next() % 20) as usize;
                    Buffer {
                        size: (next() % 3000) as usize,
                        first,
                        last: first + (next() % 6) as usize,
                    }
                })
                .collect();
            let regions: Vec<Region> = (0..1 + next() % 4)
                .map(|i| region(&format!("R{i}"), 2048 + (next() % 8000) as usize))
                .collect();
            match plan_in_regions(&b, &regions) {
                Ok(p) => {
                    check_regions(&b, &regions, &p);
                    planned += 1;
                }
                // Refused only when some buffer is too big for every region or, in every order
                // tried, met full regions.
                Err(e) => assert!(e.buffer < b.len()),
            }
        }
        assert!(planned > 50, "only {planned} of 100 random cases planned");
    }
}
