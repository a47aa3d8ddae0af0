//! Weight staging: before an op runs, its tables (weights, biases, requantization, LUTs) are
//! copied out of the blob, which may sit in slow external flash, into a buffer in fast memory,
//! and the op reads them there. Same bytes, same arithmetic: the logits do not change.
//!
//! One buffer ([`Runner::stage_weights`](super::Runner::stage_weights)): each op's tables are
//! copied, then the op runs. Two halves ([`Runner::stage_weights_ahead`](super::Runner::stage_weights_ahead)):
//! while an op runs from one half, the next op's tables move into the other, by whatever
//! [`StageCopy`] the board gives: a DMA channel that works beside the core, or [`MemCopy`].
//!
//! No `unsafe` code runs here; `StageCopy` is an `unsafe trait` because a DMA implementation
//! promises what the compiler cannot check (see its safety section).
#![allow(unsafe_code)]

use crate::format::{FormatError, Model};

/// Moves bytes from the blob into a staging buffer for
/// [`Runner::stage_weights_ahead`](super::Runner::stage_weights_ahead).
///
/// # Safety
///
/// `start` may return before the copy is done (a DMA transfer) only if the bytes of `src` stay
/// readable and nothing but the transfer writes `dst` until the next `wait` returns; `wait`
/// returns only once every byte of the last copy started has arrived (with whatever barrier the
/// hardware needs for the core to see them). The runner calls `wait` before it reads `dst`,
/// before it starts another copy and when it is dropped, but a runner that is leaked
/// (`mem::forget`) never waits: an implementation whose copies outlive `start` must be used only
/// with a staging buffer that nothing else can reach after such a leak (a `'static` buffer given
/// up to the runner), or must stop its transfer some other way.
pub unsafe trait StageCopy {
    /// Starts copying `src` into `dst` (same length).
    fn start(&mut self, src: &[u8], dst: &mut [u8]);
    /// Returns once the copy started last is complete.
    fn wait(&mut self);
}

/// A [`StageCopy`] by the core itself (`copy_from_slice`), done when `start` returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemCopy;

// SAFETY: the copy is complete when `start` returns, so `wait` has nothing to wait for.
unsafe impl StageCopy for MemCopy {
    fn start(&mut self, src: &[u8], dst: &mut [u8]) {
        dst.copy_from_slice(src);
    }

    fn wait(&mut self) {}
}

/// An op's tables staged in one half of the buffer: which op, which half, how many bytes, and
/// where they start in DATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Staged {
    op: usize,
    half: usize,
    len: usize,
    base: usize,
}

/// The staging buffer of a run and the copy in flight.
pub(crate) struct Staging<'r> {
    /// One buffer (the second half empty) or two halves.
    halves: [&'r mut [u8]; 2],
    /// `None`: one buffer, copied by the core before each op.
    copier: Option<&'r mut dyn StageCopy>,
    /// The copy started for the next op, not yet waited for.
    pending: Option<Staged>,
}

impl core::fmt::Debug for Staging<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Staging")
            .field("halves", &[self.halves[0].len(), self.halves[1].len()])
            .field("ahead", &self.copier.is_some())
            .field("pending", &self.pending)
            .finish()
    }
}

impl<'r> Staging<'r> {
    /// One buffer, copied into before each op.
    pub(crate) fn single(buffer: &'r mut [u8]) -> Self {
        Staging {
            halves: [buffer, &mut []],
            copier: None,
            pending: None,
        }
    }

    /// Two halves of `buffer` (each 16-byte aligned), the next op's tables moved by `copier`
    /// while an op runs.
    pub(crate) fn ahead(buffer: &'r mut [u8], copier: &'r mut dyn StageCopy) -> Self {
        let half = buffer.len() / 2 / crate::format::ALIGN * crate::format::ALIGN;
        let (a, rest) = buffer.split_at_mut(half);
        Staging {
            halves: [a, &mut rest[..half]],
            copier: Some(copier),
            pending: None,
        }
    }

    /// Makes op `i`'s tables ready in the buffer when they fit (`Some((bytes, DATA offset of
    /// the first))`, else `None`: the op reads them in place) and, with two halves, starts
    /// moving op `i + 1`'s into the other half. Also returns the bytes of op `i`'s tables.
    #[allow(clippy::type_complexity)]
    pub(crate) fn prepare(
        &mut self,
        model: &Model,
        i: usize,
    ) -> Result<(Option<(&[u8], usize)>, u64), FormatError> {
        let mut ready = None;
        if let Some(p) = self.pending.take() {
            if let Some(c) = self.copier.as_deref_mut() {
                c.wait();
            }
            if p.op == i {
                ready = Some(p);
            }
        }
        let bytes = match ready {
            Some(p) => p.len as u64,
            None => {
                let tables = model.op_data_range(i)?;
                let (len, base) = (tables.len(), tables.start);
                if len > 0 && len <= self.halves[0].len() {
                    let dst = &mut self.halves[0][..len];
                    match self.copier.as_deref_mut() {
                        Some(c) => {
                            c.start(model.data_bytes(tables), dst);
                            c.wait();
                        }
                        None => dst.copy_from_slice(model.data_bytes(tables)),
                    }
                    ready = Some(Staged {
                        op: i,
                        half: 0,
                        len,
                        base,
                    });
                }
                len as u64
            }
        };
        let other = ready.map_or(1, |p| 1 - p.half);
        if let Some(c) = self.copier.as_deref_mut()
            && i + 1 < model.op_count()
        {
            let next = model.op_data_range(i + 1)?;
            let (len, base) = (next.len(), next.start);
            if len > 0 && len <= self.halves[other].len() {
                c.start(model.data_bytes(next), &mut self.halves[other][..len]);
                self.pending = Some(Staged {
                    op: i + 1,
                    half: other,
                    len,
                    base,
                });
            }
        }
        Ok((
            ready.map(|p| (&self.halves[p.half][..p.len], p.base)),
            bytes,
        ))
    }
}

impl Drop for Staging<'_> {
    /// A copy still in flight (a run stopped early) is waited for before the buffer is given
    /// back.
    fn drop(&mut self) {
        if self.pending.take().is_some()
            && let Some(c) = self.copier.as_deref_mut()
        {
            c.wait();
        }
    }
}
