//! `select!`: wait on several channel operations at once, complete exactly one (Go's
//! `select` statement). The protocol is `core::select` (see the essay in `chan/mod.rs`); this
//! file is the macro and the typed arms it expands to.

use super::ChanWaiter;
use super::core::{self, Block, Case, RecvCase, SendCase};
use super::error::{RecvError, SendError};
use super::{Receiver, Sender};
use std::cell::Cell;
use std::time::Duration;

/// Wait on several channel operations and run the arm of the one that completes.
///
/// ```text
/// select! {
///     recv(rx) -> v => expr,          // v: Result<T, RecvError>
///     send(tx, value) -> r => expr,   // r: Result<(), SendError<T>>
///     default => expr,                // nothing ready: do not block
///     timeout(duration) => expr,      // or: block at most this long (at most one of the two)
/// }
/// ```
///
/// Any number of `recv` and `send` arms (up to 32), on channels of any element types, the
/// same channel more than once included. All channel and value expressions are evaluated
/// first, in order (as Go). Then, if some arms are ready, one of them is chosen uniformly at
/// random and completed; otherwise `default` runs if present, or the caller blocks (a goroutine
/// parks, a thread sleeps) until one arm completes or the `timeout` passes. Exactly one arm
/// completes: a value is received by one arm only, and an arm that did not run neither
/// received nor sent anything (the value of a `send` arm that did not run is dropped).
///
/// A `recv` arm on a closed, drained channel is ready and yields `Err(RecvError)`; a `send`
/// arm on a closed channel is ready and yields `Err(SendError(value))` — so a select on a
/// closed channel does not block (Go's receive from a closed channel is ready too).
///
/// Arm bodies are plain expressions in the caller's function: `break`, `continue`, `return`
/// and `?` work as written. Bodies may be blocks, with or without a trailing comma.
///
/// ```
/// use gort::{chan, select};
/// use std::time::Duration;
/// gort::run(|| {
///     let (tx1, rx1) = chan::bounded::<i32>(1);
///     let (tx2, rx2) = chan::bounded::<&str>(1);
///     tx2.send("hi").unwrap();
///     select! {
///         recv(rx1) -> v => panic!("nothing was sent on 1: {v:?}"),
///         recv(rx2) -> v => assert_eq!(v, Ok("hi")),
///     }
///     select! {
///         send(tx1, 7) -> r => assert!(r.is_ok()),
///         timeout(Duration::from_millis(10)) => panic!("there was room"),
///     }
///     select! {
///         recv(rx2) -> _ => panic!("empty"),
///         default => {}
///     }
///     assert_eq!(rx1.recv(), Ok(7));
/// });
/// ```
#[macro_export]
macro_rules! select {
    ($($arms:tt)*) => {
        $crate::__gort_select!(
            @parse [$($arms)*] [] []
            [__c0 __c1 __c2 __c3 __c4 __c5 __c6 __c7 __c8 __c9 __c10 __c11 __c12 __c13 __c14 __c15
             __c16 __c17 __c18 __c19 __c20 __c21 __c22 __c23 __c24 __c25 __c26 __c27 __c28 __c29
             __c30 __c31]
            [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]
        )
    };
}

/// The `select!` parser (a tt-muncher) and expansion. Not a public API.
///
/// `@parse [input] [arms so far] [default/timeout arm] [free idents] [free indices]`: each
/// recv/send arm becomes `(ident index (constructor) (pattern) (body))`; then `@emit`.
#[doc(hidden)]
#[macro_export]
macro_rules! __gort_select {
    (@parse [] $cases:tt $tail:tt $ids:tt $idx:tt) => {
        $crate::__gort_select!(@emit $cases $tail)
    };

    // recv arms: `recv(r) -> pat => body` with `, rest`, at the end, or a block without a comma.
    (@parse [recv($rx:expr) -> $res:pat => $body:expr, $($rest:tt)*] [$($cases:tt)*] $tail:tt
        [$id:ident $($ids:ident)*] [$i:tt $($is:tt)*]) => {
        $crate::__gort_select!(@parse [$($rest)*]
            [$($cases)* ($id $i ($crate::chan::__private::RecvArm::new(&$rx)) ($res) ($body))]
            $tail [$($ids)*] [$($is)*])
    };
    (@parse [recv($rx:expr) -> $res:pat => $body:expr] [$($cases:tt)*] $tail:tt
        [$id:ident $($ids:ident)*] [$i:tt $($is:tt)*]) => {
        $crate::__gort_select!(@parse []
            [$($cases)* ($id $i ($crate::chan::__private::RecvArm::new(&$rx)) ($res) ($body))]
            $tail [$($ids)*] [$($is)*])
    };
    (@parse [recv($rx:expr) -> $res:pat => $body:block $($rest:tt)*] [$($cases:tt)*] $tail:tt
        [$id:ident $($ids:ident)*] [$i:tt $($is:tt)*]) => {
        $crate::__gort_select!(@parse [$($rest)*]
            [$($cases)* ($id $i ($crate::chan::__private::RecvArm::new(&$rx)) ($res) ($body))]
            $tail [$($ids)*] [$($is)*])
    };

    // send arms: `send(s, value) -> pat => body`, the same three shapes.
    (@parse [send($tx:expr, $v:expr) -> $res:pat => $body:expr, $($rest:tt)*] [$($cases:tt)*]
        $tail:tt [$id:ident $($ids:ident)*] [$i:tt $($is:tt)*]) => {
        $crate::__gort_select!(@parse [$($rest)*]
            [$($cases)* ($id $i ($crate::chan::__private::SendArm::new(&$tx, $v)) ($res) ($body))]
            $tail [$($ids)*] [$($is)*])
    };
    (@parse [send($tx:expr, $v:expr) -> $res:pat => $body:expr] [$($cases:tt)*]
        $tail:tt [$id:ident $($ids:ident)*] [$i:tt $($is:tt)*]) => {
        $crate::__gort_select!(@parse []
            [$($cases)* ($id $i ($crate::chan::__private::SendArm::new(&$tx, $v)) ($res) ($body))]
            $tail [$($ids)*] [$($is)*])
    };
    (@parse [send($tx:expr, $v:expr) -> $res:pat => $body:block $($rest:tt)*] [$($cases:tt)*]
        $tail:tt [$id:ident $($ids:ident)*] [$i:tt $($is:tt)*]) => {
        $crate::__gort_select!(@parse [$($rest)*]
            [$($cases)* ($id $i ($crate::chan::__private::SendArm::new(&$tx, $v)) ($res) ($body))]
            $tail [$($ids)*] [$($is)*])
    };

    // At most one `default` or `timeout` arm.
    (@parse [default => $($rest:tt)*] $cases:tt [$($t:tt)+] $ids:tt $idx:tt) => {
        ::core::compile_error!("select!: at most one `default` or `timeout` arm")
    };
    (@parse [timeout($($d:tt)*) => $($rest:tt)*] $cases:tt [$($t:tt)+] $ids:tt $idx:tt) => {
        ::core::compile_error!("select!: at most one `default` or `timeout` arm")
    };
    (@parse [default => $body:expr, $($rest:tt)*] $cases:tt [] $ids:tt $idx:tt) => {
        $crate::__gort_select!(@parse [$($rest)*] $cases [default ($body)] $ids $idx)
    };
    (@parse [default => $body:expr] $cases:tt [] $ids:tt $idx:tt) => {
        $crate::__gort_select!(@parse [] $cases [default ($body)] $ids $idx)
    };
    (@parse [default => $body:block $($rest:tt)*] $cases:tt [] $ids:tt $idx:tt) => {
        $crate::__gort_select!(@parse [$($rest)*] $cases [default ($body)] $ids $idx)
    };
    (@parse [timeout($d:expr) => $body:expr, $($rest:tt)*] $cases:tt [] $ids:tt $idx:tt) => {
        $crate::__gort_select!(@parse [$($rest)*] $cases [timeout ($d) ($body)] $ids $idx)
    };
    (@parse [timeout($d:expr) => $body:expr] $cases:tt [] $ids:tt $idx:tt) => {
        $crate::__gort_select!(@parse [] $cases [timeout ($d) ($body)] $ids $idx)
    };
    (@parse [timeout($d:expr) => $body:block $($rest:tt)*] $cases:tt [] $ids:tt $idx:tt) => {
        $crate::__gort_select!(@parse [$($rest)*] $cases [timeout ($d) ($body)] $ids $idx)
    };

    (@parse [$($rest:tt)+] $cases:tt $tail:tt [] $idx:tt) => {
        ::core::compile_error!("select!: too many arms (at most 32 recv/send arms)")
    };
    (@parse [$($rest:tt)*] $cases:tt $tail:tt $ids:tt $idx:tt) => {
        ::core::compile_error!(
            "select!: expected `recv(r) -> v => ..`, `send(s, value) -> r => ..`, \
             `default => ..` or `timeout(duration) => ..`"
        )
    };

    // Evaluate every channel and value expression, in order, into the arms (a match keeps
    // temporaries such as `recv(chan::after(d))` alive to the end); select; run the body of
    // the arm that fired with its result.
    (@emit [$(($id:ident $i:tt ($ctor:expr) ($res:pat) ($body:expr)))*] $tail:tt) => {
        match ($($ctor,)*) {
            ($($id,)*) => {
                let __gort_fired = $crate::chan::__private::run(
                    &[$($id.case()),*],
                    $crate::__gort_select!(@mode $tail),
                );
                match __gort_fired {
                    $(::core::option::Option::Some($i) => {
                        let $res = $id.into_result();
                        $body
                    })*
                    ::core::option::Option::None => $crate::__gort_select!(@none $tail),
                    ::core::option::Option::Some(_) => ::core::unreachable!(),
                }
            }
        }
    };
    (@mode []) => { $crate::chan::__private::Mode::Block };
    (@mode [default ($body:expr)]) => { $crate::chan::__private::Mode::Default };
    (@mode [timeout ($d:expr) ($body:expr)]) => { $crate::chan::__private::Mode::Timeout($d) };
    (@none []) => { ::core::unreachable!() };
    (@none [default ($body:expr)]) => { $body };
    (@none [timeout ($d:expr) ($body:expr)]) => { $body };
}

/// A `recv(rx)` arm (macro support).
pub struct RecvArm<'a, T>(RecvCase<'a, T, ChanWaiter>);

/// A `send(tx, value)` arm (macro support).
pub struct SendArm<'a, T>(SendCase<'a, T, ChanWaiter>);

/// A type-erased arm, as `run` takes them (macro support).
pub struct CaseRef<'a>(&'a dyn Case<ChanWaiter>);

/// What a select does when no arm is ready (macro support).
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Block until an arm completes.
    Block,
    /// Do not block: return `None`.
    Default,
    /// Block at most this long, then return `None`.
    Timeout(Duration),
}

impl<'a, T> RecvArm<'a, T> {
    /// An arm receiving from `rx`.
    pub fn new(rx: &'a Receiver<T>) -> Self {
        RecvArm(RecvCase::new(&rx.shared.chan))
    }

    /// The arm for `run`.
    pub fn case(&self) -> CaseRef<'_> {
        CaseRef(&self.0)
    }

    /// After this arm fired: what it received.
    pub fn into_result(self) -> Result<T, RecvError> {
        self.0.into_result().ok_or(RecvError)
    }
}

impl<'a, T> SendArm<'a, T> {
    /// An arm sending `v` on `tx`.
    pub fn new(tx: &'a Sender<T>, v: T) -> Self {
        SendArm(SendCase::new(&tx.shared.chan, v))
    }

    /// The arm for `run`.
    pub fn case(&self) -> CaseRef<'_> {
        CaseRef(&self.0)
    }

    /// After this arm fired: whether the value was sent.
    pub fn into_result(self) -> Result<(), SendError<T>> {
        match self.0.into_unsent() {
            None => Ok(()),
            Some(v) => Err(SendError(v)),
        }
    }
}

/// Run a select over `cases`: the index of the arm that fired, or `None` if none was ready
/// (`Mode::Default`) or the timeout passed (`Mode::Timeout`).
pub fn run(cases: &[CaseRef<'_>], mode: Mode) -> Option<usize> {
    let block = match mode {
        Mode::Block => Block::Forever,
        Mode::Default => Block::No,
        Mode::Timeout(d) if d.is_zero() => Block::No,
        Mode::Timeout(d) => Block::Until(crate::time::deadline_after(d)),
    };
    match core::select(cases, |c| c.0, block, seed()) {
        core::Selected::Fired(i) => Some(i),
        core::Selected::NotReady => None,
    }
}

thread_local! {
    /// Per-thread xorshift state for select's poll order (0 = not seeded yet).
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A fresh random seed for one select's poll order.
fn seed() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // Seeded from the clock and the thread's stack address: distinct per thread.
            x = crate::time::nanotime() ^ (r as *const Cell<u64> as u64).rotate_left(32) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}
