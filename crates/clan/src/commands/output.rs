//! Small printing helpers shared by the commands: JSON to stdout, aligned tables.

use std::io::Write;

pub use clan_agent::report::print_json;

/// Prints rows as columns separated by two spaces; the header is the first row.
pub fn print_table(rows: &[Vec<String>]) -> anyhow::Result<()> {
    std::io::stdout()
        .lock()
        .write_all(format_table(rows).as_bytes())?;
    Ok(())
}

/// The lines [`print_table`] prints. Cells come from the clan (which may be hostile): any
/// width is padded by hand (`format!`'s width stops at 65,535), and control characters are
/// shown escaped rather than sent to the terminal.
fn format_table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if index + 1 < row.len() {
                let padding = widths[index] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn printable(cell: &str) -> String {
    if !cell.chars().any(char::is_control) {
        return cell.to_owned();
    }
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_width() {
        let wide = "w".repeat(70_000);
        let rows = vec![
            vec!["NAME".to_owned(), "TARGET".to_owned()],
            vec![wide.clone(), "-".to_owned()],
            vec!["a".to_owned(), "b".to_owned()],
        ];
        let table = format_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0].find("TARGET"), Some(70_002));
        assert_eq!(lines[1], format!("{wide}  -"));
        assert_eq!(lines[2].find('b'), Some(70_002));
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        let rows = vec![vec!["a\u{1b}[2J\nb".to_owned(), "c".to_owned()]];
        assert_eq!(format_table(&rows), "a\\u{1b}[2J\\nb  c\n");
    }
}
