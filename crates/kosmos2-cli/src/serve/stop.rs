//! Stop strings: the text ends before the first one found; a tail that could start one is held
//! back from the stream until it is known not to.

/// Cuts the text at the first stop string, holding back a tail that could start one.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopFilter {
    stops: Vec<String>,
    pub(crate) text: String,
    sent: usize,
    pub(crate) hit: bool,
}

impl StopFilter {
    pub(crate) fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// Adds a piece; returns the text that is now safe to send.
    pub(crate) fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.text.push_str(piece);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(pos.max(self.sent));
            self.hit = true;
        }
        let safe = if self.hit {
            self.text.len()
        } else {
            self.text.len() - self.held()
        };
        let out = self.text[self.sent..safe].to_string();
        self.sent = safe;
        out
    }

    /// The longest tail of the text that is a proper prefix of a stop string.
    fn held(&self) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > best && self.text.ends_with(&s[..k]) {
                    best = k;
                }
            }
        }
        best.min(self.text.len() - self.sent)
    }

    /// The rest of the text.
    pub(crate) fn finish(&mut self) -> String {
        let out = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_the_text_and_hold_back_prefixes() {
        let mut f = StopFilter::new(vec!["</phrase>".into()]);
        assert_eq!(f.push(" a dog"), " a dog");
        assert_eq!(f.push("</ph"), "");
        assert_eq!(f.push("rase> runs"), "");
        assert!(f.hit);
        assert_eq!(f.text, " a dog");
        let mut f = StopFilter::new(vec!["xyz".into()]);
        assert_eq!(f.push("abx"), "ab");
        assert_eq!(f.push("a"), "xa");
        assert_eq!(f.push("x"), "");
        assert_eq!(f.finish(), "x");
        assert_eq!(f.text, "abxax");
        let mut f = StopFilter::new(vec![]);
        assert_eq!(f.push("é"), "é");
    }
}
