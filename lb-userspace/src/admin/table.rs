//! `--output table`: rows in a box under a title, as the AWS CLI draws them.

/// A titled table of text cells.
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Table {
            title: title.to_string(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Each column's width: its widest cell, header included.
    fn widths(&self, headers: &[String]) -> Vec<usize> {
        let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        widths
    }

    /// `--output text`: the headers in capitals, then a line per row, the
    /// columns two spaces apart; no title, no box.
    pub fn render_text(&self) -> String {
        let upper: Vec<String> = self.headers.iter().map(|h| h.to_uppercase()).collect();
        let widths = self.widths(&upper);
        let mut out = String::new();
        for r in std::iter::once(&upper).chain(&self.rows) {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - width(c))))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    pub fn render(&self) -> String {
        let mut widths = self.widths(&self.headers);
        // "| a | b |": each column takes its width and 3 more, less the
        // first bar; a title wider than that widens the last column.
        let columns = widths
            .iter()
            .map(|w| w + 3)
            .sum::<usize>()
            .saturating_sub(1);
        let inner = columns.max(width(&self.title) + 2);
        if let Some(last) = widths.last_mut() {
            *last += inner - columns;
        }
        let mut out = format!("+{}+\n|{:^inner$}|\n", "-".repeat(inner), self.title);
        let rule = |out: &mut String| {
            for w in &widths {
                out.push('+');
                out.push_str(&"-".repeat(w + 2));
            }
            out.push_str("+\n");
        };
        let line = |out: &mut String, cells: &[String]| {
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                out.push_str(&format!("| {c}{} ", " ".repeat(w - width(c))));
            }
            out.push_str("|\n");
        };
        rule(&mut out);
        line(&mut out, &self.headers);
        rule(&mut out);
        for r in &self.rows {
            line(&mut out, r);
        }
        rule(&mut out);
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_line_up_under_their_headers_in_a_box() {
        let mut t = Table::new("DescribeTargetHealth", &["Id", "Port", "State"]);
        t.row(vec!["10.0.0.1".into(), "80".into(), "healthy".into()]);
        t.row(vec![
            "2001:db8::1".into(),
            "8080".into(),
            "unhealthy".into(),
        ]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "+--------------------------------+",
                "|      DescribeTargetHealth      |",
                "+-------------+------+-----------+",
                "| Id          | Port | State     |",
                "+-------------+------+-----------+",
                "| 10.0.0.1    | 80   | healthy   |",
                "| 2001:db8::1 | 8080 | unhealthy |",
                "+-------------+------+-----------+",
            ]
        );
    }

    #[test]
    fn text_is_aligned_columns_under_capital_headers() {
        let mut t = Table::new("DescribeTargetHealth", &["Id", "State", "Reason"]);
        t.row(vec!["10.0.0.1".into(), "healthy".into(), String::new()]);
        t.row(vec![
            "é".into(),
            "unhealthy".into(),
            "Target.Timeout".into(),
        ]);
        assert_eq!(
            t.render_text(),
            "ID        STATE      REASON\n\
             10.0.0.1  healthy\n\
             é         unhealthy  Target.Timeout\n"
        );
    }

    #[test]
    fn a_long_title_widens_the_last_column() {
        let mut t = Table::new("A title longer than the cells", &["a", "b"]);
        t.row(vec!["1".into(), "2".into()]);
        let text = t.render();
        let widths: Vec<usize> = text.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{text}");
        assert!(text.contains("| A title longer than the cells |"), "{text}");
    }
}
