//! Stopping criteria; mirrors HF `MaxLengthCriteria` and `EosTokenCriteria`.

/// Why a row stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It emitted an eos id (the eos is the last generated token).
    Eos,
    /// It reached `max_new_tokens`.
    MaxNewTokens,
    /// The streaming callback asked to stop.
    Stopped,
}

/// HF's default criteria: the sequence reached `max_length = prompt_len + max_new_tokens`, or its last
/// token is an eos id.
#[derive(Debug, Clone)]
pub(crate) struct StoppingCriteria {
    max_length: usize,
    eos: Vec<u32>,
}

impl StoppingCriteria {
    pub(crate) fn new(prompt_len: usize, max_new_tokens: usize, eos: &[u32]) -> Self {
        Self {
            max_length: prompt_len + max_new_tokens,
            eos: eos.to_vec(),
        }
    }

    /// `Some(reason)` when a row whose sequence is `seq` (prompt included) is done; eos wins when both hold.
    pub(crate) fn check(&self, seq: &[u32]) -> Option<FinishReason> {
        if seq.last().is_some_and(|t| self.eos.contains(t)) {
            Some(FinishReason::Eos)
        } else if seq.len() >= self.max_length {
            Some(FinishReason::MaxNewTokens)
        } else {
            None
        }
    }

    pub(crate) fn is_eos(&self, token: u32) -> bool {
        self.eos.contains(&token)
    }

    pub(crate) fn max_length(&self) -> usize {
        self.max_length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_and_length() {
        let c = StoppingCriteria::new(3, 2, &[2, 7]);
        assert_eq!(c.check(&[0, 5, 6, 9]), None);
        assert_eq!(c.check(&[0, 5, 6, 7]), Some(FinishReason::Eos));
        assert_eq!(c.check(&[0, 5, 6, 9, 9]), Some(FinishReason::MaxNewTokens));
        assert_eq!(c.check(&[0, 5, 6, 9, 2]), Some(FinishReason::Eos));
        assert!(c.is_eos(7) && !c.is_eos(9));
        assert_eq!(c.max_length(), 5);
    }
}
