//! Positions in a text file, for parse errors that name where the problem is without quoting
//! the text (a configuration line may hold a password or a credential).

/// The 1-based line and column (in characters) of byte `offset` of `text`; an offset past the
/// end, or inside a character, counts from the whole text.
#[must_use]
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let text = "a = 1\nnäme = \"x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "näme = " is 8 bytes but 7 characters.
        assert_eq!(line_column(text, 14), (2, 8));
        assert_eq!(line_column(text, 1000), (3, 1));
    }
}
