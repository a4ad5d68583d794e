//! Which operation a sandbox's state allows, in one place: every engine
//! operation asks [`State::admits`] before it acts, and the table test below
//! is the whole rule book.

use crate::model::State;
use crate::{Error, Result};
use uuid::Uuid;

/// What a caller asks of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Commands, files, ports, the proxy, platform: anything the agent does.
    UseAgent,
    Stop,
    Start,
    Pause,
    Resume,
    Destroy,
    /// Reset the idle clock.
    Touch,
    ExtendTtl,
    UpdateConfig,
    Metrics,
    Logs,
    /// Capture its filesystem (a snapshot, a fork).
    Snapshot,
}

/// What the state says to an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Proceed,
    /// It is already so: answer the sandbox as it is (stop of a stopped one).
    Already,
    /// Refused: a conflict with the state.
    Refuse,
}

impl State {
    /// The rule book. Lifecycle requests are idempotent: asking for the
    /// state a sandbox is in is no error.
    pub fn admits(self, a: Action) -> Verdict {
        use Action::*;
        use State::*;
        use Verdict::*;
        match (a, self) {
            (UseAgent, Running) => Proceed,
            (UseAgent, _) => Refuse,
            (Stop, Running | Paused) => Proceed,
            (Stop, Stopped) => Already,
            (Stop, _) => Refuse,
            (Start, Stopped) => Proceed,
            (Start, Running) => Already,
            (Start, _) => Refuse,
            (Pause, Running) => Proceed,
            (Pause, Paused) => Already,
            (Pause, _) => Refuse,
            (Resume, Paused) => Proceed,
            (Resume, Running) => Already,
            (Resume, _) => Refuse,
            (Destroy, Destroyed) => Already,
            (Destroy, _) => Proceed,
            (Touch | UpdateConfig, Destroyed | Error) => Refuse,
            (Touch | UpdateConfig, _) => Proceed,
            (ExtendTtl | Logs, Destroyed) => Refuse,
            (ExtendTtl | Logs, _) => Proceed,
            (Metrics, Running | Paused) => Proceed,
            (Metrics, _) => Refuse,
            (Snapshot, Running | Paused | Stopped) => Proceed,
            (Snapshot, _) => Refuse,
        }
    }

    pub fn can_use_agent(self) -> bool {
        self.admits(Action::UseAgent) == Verdict::Proceed
    }
    pub fn can_pause(self) -> bool {
        self.admits(Action::Pause) == Verdict::Proceed
    }
    pub fn can_resume(self) -> bool {
        self.admits(Action::Resume) == Verdict::Proceed
    }
    pub fn can_stop(self) -> bool {
        self.admits(Action::Stop) == Verdict::Proceed
    }
    pub fn can_start(self) -> bool {
        self.admits(Action::Start) == Verdict::Proceed
    }

    /// `Ok(true)` to go ahead, `Ok(false)` when it is already so, a
    /// conflict naming the sandbox and its state when refused.
    pub fn check(self, a: Action, id: Uuid) -> Result<bool> {
        match self.admits(a) {
            Verdict::Proceed => Ok(true),
            Verdict::Already => Ok(false),
            Verdict::Refuse if a == Action::UseAgent => Err(Error::Conflict(format!(
                "sandbox {id} is {}, not running",
                self.as_str()
            ))),
            Verdict::Refuse => Err(Error::Conflict(format!(
                "sandbox {id} is {}",
                self.as_str()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Verdict::*;

    const STATES: [State; 6] = [
        State::Creating,
        State::Running,
        State::Paused,
        State::Stopped,
        State::Error,
        State::Destroyed,
    ];

    /// Every action against every state, in the order of `STATES`:
    /// P proceed, A already so, R refused.
    #[test]
    fn the_rule_book() {
        let table: [(Action, &str); 12] = [
            //           Cr Ru Pa St Er De
            (UseAgent, "R  P  R  R  R  R"),
            (Stop, "R  P  P  A  R  R"),
            (Start, "R  A  R  P  R  R"),
            (Pause, "R  P  A  R  R  R"),
            (Resume, "R  A  P  R  R  R"),
            (Destroy, "P  P  P  P  P  A"),
            (Touch, "P  P  P  P  R  R"),
            (ExtendTtl, "P  P  P  P  P  R"),
            (UpdateConfig, "P  P  P  P  R  R"),
            (Metrics, "R  P  P  R  R  R"),
            (Logs, "P  P  P  P  P  R"),
            (Snapshot, "R  P  P  P  R  R"),
        ];
        for (action, row) in table {
            let want: Vec<Verdict> = row
                .split_whitespace()
                .map(|c| match c {
                    "P" => Proceed,
                    "A" => Already,
                    _ => Refuse,
                })
                .collect();
            for (state, want) in STATES.iter().zip(want) {
                assert_eq!(state.admits(action), want, "{action:?} on {state:?}");
            }
        }
    }

    #[test]
    fn a_refusal_is_a_conflict_naming_the_state() {
        let id = Uuid::nil();
        let e = State::Stopped.check(UseAgent, id).unwrap_err();
        assert!(
            matches!(e, Error::Conflict(ref m) if m.contains("stopped, not running")),
            "{e}"
        );
        let e = State::Error.check(Pause, id).unwrap_err();
        assert!(
            matches!(e, Error::Conflict(ref m) if m.ends_with("is error")),
            "{e}"
        );
        assert!(!State::Stopped.check(Stop, id).unwrap());
        assert!(State::Running.check(Stop, id).unwrap());
        assert!(State::Running.can_use_agent() && State::Paused.can_resume());
        assert!(!State::Paused.can_pause() && State::Stopped.can_start());
    }
}
