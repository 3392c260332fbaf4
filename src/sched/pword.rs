//! The P status word (state + epoch) and the CAS protocol between an M and sysmon, kept
//! apart from `p.rs` so that `.ci/loom.sh` can model it (the rest of the P is not built under
//! loom). The protocol itself is described in `syscall.rs` and `sysmon.rs`.
// Under loom only the models below use these.
#![cfg_attr(loom, allow(dead_code))]

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PStatus {
    Idle = 0,
    Running = 1,
    Syscall = 2,
    Dead = 3,
    Retaking = 4,
}

/// Bits of the status word below the epoch.
const STATE_BITS: u32 = 8;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// The state part of a status word.
#[inline]
pub(crate) fn word_state(w: u64) -> PStatus {
    match w & STATE_MASK {
        0 => PStatus::Idle,
        1 => PStatus::Running,
        2 => PStatus::Syscall,
        3 => PStatus::Dead,
        _ => PStatus::Retaking,
    }
}

/// The word that follows `w` in state `to`: same P, next epoch.
#[inline]
pub(crate) fn next_word(w: u64, to: PStatus) -> u64 {
    ((w >> STATE_BITS) + 1) << STATE_BITS | to as u64
}

/// loom models of the two races on a P's status word, using the real word functions: an M
/// leaving `gort::syscall` against sysmon's retake, and an M waking from foreign blocking
/// against sysmon's `Retaking` check. Run with `.ci/loom.sh pword`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::loom::{AtomicBool, AtomicU64, Ordering, fence};
    use loom::sync::Arc;
    use loom::thread;

    /// The M's runtime entry (`syscall::owns`, then `regain_p`'s reclaim of a `Retaking` P):
    /// whether it still owns the P, and the word it holds then.
    fn choke_point(word: &AtomicU64, mine: u64) -> (bool, u64) {
        let w = word.load(Ordering::Acquire);
        if w == mine {
            return (true, mine);
        }
        if w != next_word(mine, PStatus::Retaking) {
            return (false, mine);
        }
        let nw = next_word(w, PStatus::Running);
        if word
            .compare_exchange(w, nw, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            (true, nw)
        } else {
            (word.load(Ordering::Acquire) == mine, mine)
        }
    }

    /// `exitsyscall`'s fast-path CAS and `retake`'s CAS start from the same `Syscall` word:
    /// exactly one of them owns the P afterwards.
    #[test]
    fn exitsyscall_vs_retake() {
        loom::model(|| {
            let start = next_word(PStatus::Running as u64, PStatus::Syscall);
            let word = Arc::new(AtomicU64::new(start));
            let w2 = word.clone();
            let sysmon = thread::spawn(move || {
                let w = w2.load(Ordering::Acquire);
                word_state(w) == PStatus::Syscall
                    && w2
                        .compare_exchange(
                            w,
                            next_word(w, PStatus::Running),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
            });
            let m_won = word
                .compare_exchange(
                    start,
                    next_word(start, PStatus::Running),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
            let sysmon_won = sysmon.join().unwrap();
            assert!(m_won ^ sysmon_won, "m {m_won} sysmon {sysmon_won}");
        });
    }

    /// Foreign blocking: sysmon saw the M asleep (`ran` false), marks the P `Retaking`, checks
    /// again that the M has not run, and takes it or reverts; the M, once it runs, checks its
    /// word at its next runtime call and reclaims a `Retaking` P (`syscall::regain_p`). Exactly
    /// one of them owns the P at the end, and an M that kept it holds the current word.
    #[test]
    fn foreign_retake_vs_wakeup() {
        loom::model(|| {
            let mine = next_word(0, PStatus::Running);
            let word = Arc::new(AtomicU64::new(mine));
            let ran = Arc::new(AtomicBool::new(false));
            let (w2, r2) = (word.clone(), ran.clone());
            let sysmon = thread::spawn(move || {
                // SeqCst here stands for the kernel's word that the thread has not run
                // (its CPU time unchanged across a context switch, a full barrier).
                if r2.load(Ordering::SeqCst) {
                    return false;
                }
                let tentative = next_word(mine, PStatus::Retaking);
                // The fence below stands for the kernel's ordering between this CAS and the
                // second look: reading the M's CPU time takes the lock of the M's run queue, which
                // the M's wake-up also takes, so either the look sees the M ran or the M's
                // first load comes after this CAS.
                if w2
                    .compare_exchange(mine, tentative, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return false;
                }
                fence(Ordering::SeqCst);
                if r2.load(Ordering::SeqCst) {
                    let _ =
                        w2.compare_exchange(tentative, mine, Ordering::AcqRel, Ordering::Acquire);
                    return false;
                }
                w2.compare_exchange(
                    tentative,
                    next_word(tentative, PStatus::Running),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            });
            // The M wakes up and makes a runtime call.
            ran.store(true, Ordering::SeqCst);
            // The fence stands for the context switch that scheduled the M in: its first load
            // comes after the kernel started counting its CPU time (what sysmon reads).
            fence(Ordering::SeqCst);
            let (m_owns, pword) = choke_point(&word, mine);
            let sysmon_took = sysmon.join().unwrap();
            assert!(m_owns ^ sysmon_took, "m {m_owns} sysmon {sysmon_took}");
            if m_owns {
                assert_eq!(word.load(Ordering::Acquire), pword);
            }
        });
    }

    /// The stamp-driven retake (sysmon.rs, `Probe`): the M was seen in foreign code, but may
    /// already be back in the runtime, using its P. sysmon gives the M the probe's token,
    /// marks the P `Retaking`, signals the M, and takes the P only if the handler acks with
    /// that token — the handler acks only when it finds the M outside the runtime *and* sees
    /// the mark (twice, the token read in between). The M, in the runtime, checks its word
    /// (the choke point, or `cas_status` for a P it moves on) and reclaims a `Retaking` P. The
    /// handler runs on the M's thread at some point of its program: before its runtime call
    /// (the M is still foreign) or never (the M is in the runtime: the handler refuses, no
    /// ack). The P's owner-only state is an `UnsafeCell`: loom fails the model if sysmon and
    /// the M ever use it at the same time.
    #[test]
    fn stamp_probe_vs_runtime_entry() {
        use loom::cell::UnsafeCell;
        for handler_runs in [false, true] {
            loom::model(move || {
                let mine = next_word(0, PStatus::Running);
                let word = Arc::new(AtomicU64::new(mine));
                let ack = Arc::new(AtomicU64::new(0));
                let token = Arc::new(AtomicU64::new(0));
                let pstate = Arc::new(UnsafeCell::new(0u32));
                let (w2, a2, t2, p2) = (word.clone(), ack.clone(), token.clone(), pstate.clone());
                let sysmon = thread::spawn(move || {
                    let tentative = next_word(mine, PStatus::Retaking);
                    t2.store(1, Ordering::Release);
                    if w2
                        .compare_exchange(mine, tentative, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        return false;
                    }
                    // (tgkill; the next look, a tick later.)
                    if a2.load(Ordering::Acquire) != 1 {
                        // No answer: revert exactly (fails if the M reclaimed it).
                        let _ = w2.compare_exchange(
                            tentative,
                            mine,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        return false;
                    }
                    let took = w2
                        .compare_exchange(
                            tentative,
                            next_word(tentative, PStatus::Running),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok();
                    if took {
                        // handoffp: the next holder uses the P.
                        p2.with_mut(|v| unsafe { *v += 1 });
                    }
                    took
                });
                // The M, in foreign code: the handler may run here.
                if handler_runs {
                    let w = word.load(Ordering::Acquire);
                    if word_state(w) == PStatus::Retaking {
                        let t = token.load(Ordering::Acquire);
                        if word.load(Ordering::Acquire) == w {
                            ack.store(t, Ordering::Release);
                        }
                    }
                }
                // Back into the runtime: the choke point.
                let (m_owns, pword) = choke_point(&word, mine);
                if m_owns {
                    // The M uses its P (if sysmon took it too, loom sees the race).
                    pstate.with_mut(|v| unsafe { *v += 1 });
                    // And moves it on, as `cas_status(Running -> Idle)` does: from `Running`,
                    // or from a `Retaking` that sysmon has not decided yet.
                    loop {
                        let w = word.load(Ordering::Acquire);
                        assert!(
                            w == pword || w == next_word(pword, PStatus::Retaking),
                            "the M's P changed hands under it"
                        );
                        if word
                            .compare_exchange(
                                w,
                                next_word(w, PStatus::Idle),
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            )
                            .is_ok()
                        {
                            break;
                        }
                    }
                }
                let sysmon_took = sysmon.join().unwrap();
                assert!(m_owns ^ sysmon_took, "m {m_owns} sysmon {sysmon_took}");
            });
        }
    }
}
