//! The dashboard's pictures, drawn on the server as SVG (no script, nothing fetched):
//! coverage per group against the rule, the college's coverage day by day, and each
//! group's attendance day by day as a heatmap. Each scales to the screen's width (the
//! style sheet's `svg{max-width:100%}`) and names itself for screen readers.

use kasip_core::{per_mille_text, Date, Month, ScopeCoverage};

use crate::coverage::GroupDay;

/// One bar of the coverage chart, in SVG units.
pub struct ChartBar {
    pub group: String,
    pub per_mille: u64,
    pub holds: bool,
    pub y: u64,
    pub text_y: u64,
    pub width: u64,
    pub value_x: u64,
    pub value: String,
}

/// Bars of coverage per group, 0–100%, with a dashed line at the minimum.
pub struct CoverageChart {
    pub width: u64,
    pub height: u64,
    pub label_width: u64,
    pub bar_height: u64,
    pub threshold_x: u64,
    pub bars: Vec<ChartBar>,
}

impl CoverageChart {
    const BAR: u64 = 28;
    const WIDTH: u64 = 600;
    const LABEL_WIDTH: u64 = 110;

    pub fn new(groups: &[ScopeCoverage], min_per_mille: u16) -> Self {
        let scale = |per_mille: u64| {
            Self::LABEL_WIDTH + per_mille * (Self::WIDTH - Self::LABEL_WIDTH - 60) / 1000
        };
        let bars = groups
            .iter()
            .enumerate()
            .map(|(index, group)| {
                let y = 10 + Self::BAR * index as u64;
                let per_mille = group.coverage_per_mille.unwrap_or(0);
                ChartBar {
                    group: group.scope.clone(),
                    per_mille,
                    holds: group.holds,
                    y,
                    text_y: y + 17,
                    width: scale(per_mille) - Self::LABEL_WIDTH,
                    value_x: scale(per_mille) + 4,
                    value: per_mille_text(group.coverage_per_mille),
                }
            })
            .collect();
        Self {
            width: Self::WIDTH,
            height: 20 + Self::BAR * groups.len() as u64,
            label_width: Self::LABEL_WIDTH,
            bar_height: Self::BAR - 8,
            threshold_x: scale(u64::from(min_per_mille)),
            bars,
        }
    }
}

/// One day's point of the trend line.
pub struct TrendPoint {
    pub date: String,
    pub per_mille: u64,
    pub x: u64,
    pub y: u64,
    pub value: String,
}

/// The college's coverage counting marks through each day of the month, 0–100%, with a
/// dashed line at the rule's minimum; days before any mark have no point.
pub struct TrendChart {
    pub width: u64,
    pub height: u64,
    /// The polyline's points, "x,y x,y …".
    pub line: String,
    pub points: Vec<TrendPoint>,
    pub threshold_y: u64,
    pub left: u64,
    pub right: u64,
    /// (y, label) of the 0%, 50% and 100% lines.
    pub y_ticks: Vec<(u64, &'static str)>,
    /// (x, day of month) under the line, every seventh day.
    pub x_ticks: Vec<(u64, u8)>,
}

impl TrendChart {
    const WIDTH: u64 = 600;
    const HEIGHT: u64 = 200;
    const LEFT: u64 = 44;
    const TOP: u64 = 10;
    const PLOT_HEIGHT: u64 = 160;

    pub fn new(month: Month, days: &[(String, Option<u64>)], min_per_mille: u16) -> Self {
        let last = u64::from(month.last_day().day());
        let step = (Self::WIDTH - Self::LEFT - 16) / last.max(1);
        let x = |day: u64| Self::LEFT + (day - 1) * step + step / 2;
        let y = |per_mille: u64| {
            Self::TOP + Self::PLOT_HEIGHT - per_mille.min(1000) * Self::PLOT_HEIGHT / 1000
        };
        let points: Vec<TrendPoint> = days
            .iter()
            .filter_map(|(date, figure)| {
                let per_mille = (*figure)?;
                let day = Date::parse(date).ok()?.day();
                Some(TrendPoint {
                    date: date.clone(),
                    per_mille,
                    x: x(u64::from(day)),
                    y: y(per_mille),
                    value: per_mille_text(Some(per_mille)),
                })
            })
            .collect();
        let line = points
            .iter()
            .map(|point| format!("{},{}", point.x, point.y))
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            width: Self::WIDTH,
            height: Self::HEIGHT,
            line,
            points,
            threshold_y: y(u64::from(min_per_mille)),
            left: Self::LEFT,
            right: Self::WIDTH - 8,
            y_ticks: vec![(y(0), "0%"), (y(500), "50%"), (y(1000), "100%")],
            x_ticks: (1..=last)
                .step_by(7)
                .map(|day| (x(day), day as u8))
                .collect(),
        }
    }
}

/// One group-day of the heatmap.
pub struct HeatCell {
    pub x: u64,
    pub date: String,
    /// Thousandths attended, or -1 without anyone expected (for scripts and tests).
    pub per_mille: i64,
    /// The colour band, a class the style sheet fills.
    pub band: &'static str,
    /// What a pointer or screen reader is told: "ПО-21, 2026-11-23: 92.0% (23/25)".
    pub title: String,
}

pub struct HeatRow {
    pub group: String,
    pub y: u64,
    pub text_y: u64,
    pub cells: Vec<HeatCell>,
}

/// Each group's attendance per lesson day of the month, a cell per group and day,
/// coloured in bands of the share attended; days without the group's lessons are blank.
pub struct Heatmap {
    pub width: u64,
    pub height: u64,
    pub cell: u64,
    pub cell_height: u64,
    /// (x, day of month) of the column headings.
    pub days: Vec<(u64, u8)>,
    pub rows: Vec<HeatRow>,
    /// (band, its lower bound) for the legend.
    pub legend: Vec<(&'static str, &'static str)>,
}

impl Heatmap {
    const LABEL_WIDTH: u64 = 90;
    const CELL: u64 = 18;
    const ROW: u64 = 20;
    const TOP: u64 = 22;
    /// Lower bounds in thousandths, highest first, with the class of their colour.
    const BANDS: [(u64, &'static str, &'static str); 5] = [
        (950, "heat-5", "≥ 95%"),
        (850, "heat-4", "≥ 85%"),
        (700, "heat-3", "≥ 70%"),
        (500, "heat-2", "≥ 50%"),
        (0, "heat-1", "< 50%"),
    ];

    fn band(per_mille: u64) -> &'static str {
        Self::BANDS
            .iter()
            .find(|(bound, _, _)| per_mille >= *bound)
            .map_or("heat-1", |(_, band, _)| band)
    }

    pub fn new(month: Month, group_days: &[GroupDay]) -> Self {
        let last = u64::from(month.last_day().day());
        let x = |day: u64| Self::LABEL_WIDTH + (day - 1) * Self::CELL;
        let mut rows: Vec<HeatRow> = Vec::new();
        for day in group_days {
            if rows.last().is_none_or(|row| row.group != day.group) {
                let y = Self::TOP + Self::ROW * rows.len() as u64;
                rows.push(HeatRow {
                    group: day.group.clone(),
                    y,
                    text_y: y + 14,
                    cells: Vec::new(),
                });
            }
            let Some(row) = rows.last_mut() else {
                continue;
            };
            let per_mille = day.attended_per_mille();
            row.cells.push(HeatCell {
                x: x(u64::from(day.date.day())),
                date: day.date.to_string(),
                per_mille: per_mille.map_or(-1, |value| value as i64),
                band: per_mille.map_or("heat-none", Self::band),
                title: format!(
                    "{}, {}: {} ({}/{})",
                    day.group,
                    day.date,
                    per_mille_text(per_mille),
                    day.attended.min(day.expected),
                    day.expected
                ),
            });
        }
        Self {
            width: Self::LABEL_WIDTH + last * Self::CELL + 4,
            height: Self::TOP + Self::ROW * rows.len() as u64 + 4,
            cell: Self::CELL - 2,
            cell_height: Self::ROW - 4,
            days: (1..=last)
                .map(|day| (x(day) + Self::CELL / 2, day as u8))
                .collect(),
            rows,
            legend: Self::BANDS
                .iter()
                .map(|(_, band, text)| (*band, *text))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(group: &str, date: &str, expected: u64, attended: u64) -> GroupDay {
        GroupDay {
            group: group.into(),
            date: Date::parse(date).expect("date"),
            expected,
            attended,
            qr: attended,
        }
    }

    #[test]
    fn the_heatmap_puts_each_group_day_in_its_row_column_and_band() {
        let month = Month::parse("2026-11").expect("month");
        let map = Heatmap::new(
            month,
            &[
                day("A", "2026-11-02", 20, 19),
                day("A", "2026-11-30", 20, 9),
                day("B", "2026-11-02", 0, 0),
            ],
        );
        assert_eq!(map.rows.len(), 2);
        assert_eq!(map.days.len(), 30);
        let a = &map.rows[0].cells;
        assert_eq!((a[0].per_mille, a[0].band), (950, "heat-5"));
        assert_eq!((a[1].per_mille, a[1].band), (450, "heat-1"));
        assert_eq!(a[1].x - a[0].x, 28 * Heatmap::CELL);
        assert!(a[1].x + map.cell <= map.width);
        assert_eq!(
            (map.rows[1].cells[0].per_mille, map.rows[1].cells[0].band),
            (-1, "heat-none")
        );
        assert!(map.rows[1].y > map.rows[0].y);
        assert!(map.rows[1].y + map.cell_height <= map.height);
    }

    #[test]
    fn the_trend_line_has_a_point_per_day_with_a_figure_higher_when_better() {
        let month = Month::parse("2026-11").expect("month");
        let days = vec![
            ("2026-11-01".to_owned(), None),
            ("2026-11-02".to_owned(), Some(400)),
            ("2026-11-03".to_owned(), Some(800)),
        ];
        let chart = TrendChart::new(month, &days, 500);
        assert_eq!(chart.points.len(), 2);
        assert!(chart.points[1].x > chart.points[0].x);
        assert!(chart.points[1].y < chart.points[0].y, "80% above 40%");
        assert!(chart.points[0].y > chart.threshold_y && chart.points[1].y < chart.threshold_y);
        assert_eq!(chart.line.split(' ').count(), 2);
        assert!(chart
            .points
            .iter()
            .all(|point| point.x < chart.width && point.y < chart.height));
    }
}
