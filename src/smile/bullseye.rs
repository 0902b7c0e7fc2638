//! AHA bull's-eye plots of per-segment scar, as SVG or PNG.
//!
//! Standard layout viewed from the apex (Cerqueira et al. 2002): four rings
//! of equal width — basal (1–6) outside, mid (7–12), apical (13–16), apex
//! (17) in the centre — segment 1 (anterior) at the top, the septum (2, 3,
//! 8, 9, 14) on the left, numbering counter-clockwise. Each segment is
//! filled by its scar % on a yellow–orange–red colour map, with a colour bar
//! on the right; segments without myocardium are grey.

use super::stats::SegmentStats;
use super::territory::SEGMENT_COUNT;
use crate::error::{Error, Result};

/// How to draw a bull's-eye.
#[derive(Debug, Clone, PartialEq)]
pub struct BullseyeOptions {
    /// Diameter of the plot area in pixels (the image is 1.3× as wide for
    /// the colour bar). Default 480; accepted 64–4096.
    pub size_px: u32,
    /// Title above the plot (SVG only). Default none.
    pub title: Option<String>,
    /// Scar % at the top of the colour scale (higher values saturate).
    /// Default 100; must be finite and > 0.
    pub max_percent: f64,
    /// Print segment numbers. Default true.
    pub show_numbers: bool,
    /// Print each segment's scar % under its number (SVG only). Default true.
    pub show_percent: bool,
}

impl Default for BullseyeOptions {
    fn default() -> Self {
        BullseyeOptions {
            size_px: 480,
            title: None,
            max_percent: 100.0,
            show_numbers: true,
            show_percent: true,
        }
    }
}

impl BullseyeOptions {
    /// Checks size and colour scale.
    pub fn validate(&self) -> Result<()> {
        if !(64..=4096).contains(&self.size_px) {
            return Err(Error::invalid(format!(
                "bull's-eye size must be 64–4096 px, got {}",
                self.size_px
            )));
        }
        if !self.max_percent.is_finite() || self.max_percent <= 0.0 {
            return Err(Error::invalid(format!(
                "bull's-eye max_percent must be finite and > 0, got {}",
                self.max_percent
            )));
        }
        Ok(())
    }
}

/// Colour-map stops (fraction of the scale, sRGB): yellow → orange → red →
/// dark red, light for little scar.
const COLOUR_STOPS: [(f64, [u8; 3]); 5] = [
    (0.0, [255, 255, 204]),
    (0.25, [254, 217, 118]),
    (0.5, [253, 141, 60]),
    (0.75, [227, 26, 28]),
    (1.0, [128, 0, 38]),
];
/// Fill of segments without myocardium.
const ABSENT_COLOUR: [u8; 3] = [217, 217, 217];

/// The colour of `fraction` (0–1, clamped) of the scale.
pub fn colour(fraction: f64) -> [u8; 3] {
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    for w in COLOUR_STOPS.windows(2) {
        let ((f0, c0), (f1, c1)) = (w[0], w[1]);
        if f <= f1 {
            let t = (f - f0) / (f1 - f0);
            return [0, 1, 2].map(|a| {
                (f64::from(c0[a]) + t * (f64::from(c1[a]) - f64::from(c0[a]))).round() as u8
            });
        }
    }
    COLOUR_STOPS[COLOUR_STOPS.len() - 1].1
}

/// One segment's place on the wheel: radii as fractions of the wheel
/// radius, angles in degrees counter-clockwise from 3 o'clock.
#[derive(Debug, Clone, Copy)]
struct Sector {
    segment: u8,
    r_in: f64,
    r_out: f64,
    start_deg: f64,
    end_deg: f64,
}

fn sectors() -> Vec<Sector> {
    let mut out = Vec::with_capacity(SEGMENT_COUNT);
    for (first, r_in, r_out) in [(1u8, 0.75, 1.0), (7, 0.5, 0.75)] {
        for i in 0..6u8 {
            let centre = 90.0 + 60.0 * f64::from(i);
            out.push(Sector {
                segment: first + i,
                r_in,
                r_out,
                start_deg: centre - 30.0,
                end_deg: centre + 30.0,
            });
        }
    }
    for i in 0..4u8 {
        let centre = 90.0 + 90.0 * f64::from(i);
        out.push(Sector {
            segment: 13 + i,
            r_in: 0.25,
            r_out: 0.5,
            start_deg: centre - 45.0,
            end_deg: centre + 45.0,
        });
    }
    out.push(Sector {
        segment: 17,
        r_in: 0.0,
        r_out: 0.25,
        start_deg: 0.0,
        end_deg: 360.0,
    });
    out
}

/// The segment under a point at `r` (fraction of the wheel radius) and
/// angle `deg` (counter-clockwise from 3 o'clock), `None` off the wheel.
fn segment_at(r: f64, deg: f64) -> Option<Sector> {
    if !(0.0..=1.0).contains(&r) {
        return None;
    }
    let deg = deg.rem_euclid(360.0);
    sectors().into_iter().find(|s| {
        let d = (deg - s.start_deg).rem_euclid(360.0);
        r >= s.r_in
            && r <= s.r_out
            && (s.end_deg - s.start_deg >= 360.0 || d < s.end_deg - s.start_deg)
    })
}

fn fill_of(stats: &SegmentStats, segment: u8, max_percent: f64) -> ([u8; 3], Option<f64>) {
    match stats.segment(segment) {
        Some(s) if s.myocardium_ml > 0.0 => {
            (colour(s.scar_percent / max_percent), Some(s.scar_percent))
        }
        _ => (ABSENT_COLOUR, None),
    }
}

/// Black or white, whichever reads better on `bg`.
fn text_colour(bg: [u8; 3]) -> [u8; 3] {
    let luminance = 0.299 * f64::from(bg[0]) + 0.587 * f64::from(bg[1]) + 0.114 * f64::from(bg[2]);
    if luminance > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Pixel layout shared by SVG and PNG.
struct Layout {
    width: f64,
    height: f64,
    cx: f64,
    cy: f64,
    radius: f64,
    bar_x: f64,
    bar_y: f64,
    bar_w: f64,
    bar_h: f64,
}

impl Layout {
    fn new(size: f64, title_h: f64) -> Self {
        Layout {
            width: (size * 1.3).round(),
            height: size + title_h,
            cx: size / 2.0,
            cy: title_h + size / 2.0,
            radius: size * 0.46,
            bar_x: size * 1.04,
            bar_y: title_h + size * 0.1,
            bar_w: size * 0.06,
            bar_h: size * 0.8,
        }
    }

    /// Screen point of polar `(r_frac, deg)`; screen y grows downwards.
    fn point(&self, r_frac: f64, deg: f64) -> (f64, f64) {
        let a = deg.to_radians();
        (
            self.cx + self.radius * r_frac * a.cos(),
            self.cy - self.radius * r_frac * a.sin(),
        )
    }
}

/// Tick values of the colour bar.
fn ticks(max_percent: f64) -> [f64; 5] {
    [0.0, 0.25, 0.5, 0.75, 1.0].map(|f| f * max_percent)
}

fn tick_label(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}%")
    } else {
        format!("{value:.1}%")
    }
}

/// The bull's-eye of `stats` as a standalone SVG document.
pub fn render_svg(stats: &SegmentStats, options: &BullseyeOptions) -> Result<String> {
    options.validate()?;
    let size = f64::from(options.size_px);
    let title_h = if options.title.is_some() {
        size * 0.08
    } else {
        0.0
    };
    let l = Layout::new(size, title_h);
    let font = size * 0.04;
    let mut svg = String::new();
    svg.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"Helvetica, Arial, sans-serif\">\n",
        w = l.width,
        h = l.height
    ));
    svg.push_str("<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
    if let Some(title) = &options.title {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
            l.width / 2.0,
            title_h * 0.7,
            font * 1.2,
            xml_escape(title)
        ));
    }
    svg.push_str("<g stroke=\"#ffffff\" stroke-width=\"1.5\">\n");
    for s in sectors() {
        let (fill, _) = fill_of(stats, s.segment, options.max_percent);
        let shape = if s.r_in == 0.0 {
            format!(
                "<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"{:.2}\"",
                l.cx,
                l.cy,
                l.radius * s.r_out
            )
        } else {
            let (x0, y0) = l.point(s.r_out, s.start_deg);
            let (x1, y1) = l.point(s.r_out, s.end_deg);
            let (x2, y2) = l.point(s.r_in, s.end_deg);
            let (x3, y3) = l.point(s.r_in, s.start_deg);
            let (ro, ri) = (l.radius * s.r_out, l.radius * s.r_in);
            // Counter-clockwise on screen is SVG sweep-flag 0 (y points down).
            format!(
                "<path d=\"M {x0:.2} {y0:.2} A {ro:.2} {ro:.2} 0 0 0 {x1:.2} {y1:.2} L {x2:.2} {y2:.2} A {ri:.2} {ri:.2} 0 0 1 {x3:.2} {y3:.2} Z\""
            )
        };
        svg.push_str(&format!(
            "{shape} fill=\"{}\"><title>segment {}</title></{}>\n",
            hex(fill),
            s.segment,
            if s.r_in == 0.0 { "circle" } else { "path" }
        ));
    }
    svg.push_str("</g>\n<g text-anchor=\"middle\">\n");
    for s in sectors() {
        let (fill, percent) = fill_of(stats, s.segment, options.max_percent);
        let ink = hex(text_colour(fill));
        let (r_mid, deg_mid) = if s.r_in == 0.0 {
            (0.0, 0.0)
        } else {
            (0.5 * (s.r_in + s.r_out), 0.5 * (s.start_deg + s.end_deg))
        };
        let (x, y) = l.point(r_mid, deg_mid);
        let two_lines = options.show_numbers && options.show_percent;
        if options.show_numbers {
            let y_num = if two_lines {
                y - font * 0.15
            } else {
                y + font * 0.35
            };
            svg.push_str(&format!(
                "<text class=\"segment-number\" x=\"{x:.1}\" y=\"{y_num:.1}\" font-size=\"{:.1}\" font-weight=\"bold\" fill=\"{ink}\">{}</text>\n",
                font,
                s.segment
            ));
        }
        if options.show_percent {
            let y_pct = if two_lines {
                y + font * 0.85
            } else {
                y + font * 0.35
            };
            let text = percent.map_or("–".to_string(), |p| format!("{p:.0}%"));
            svg.push_str(&format!(
                "<text class=\"segment-percent\" x=\"{x:.1}\" y=\"{y_pct:.1}\" font-size=\"{:.1}\" fill=\"{ink}\">{text}</text>\n",
                font * 0.8
            ));
        }
    }
    svg.push_str("</g>\n");

    // Colour bar: a vertical gradient, 0 at the bottom.
    svg.push_str("<defs><linearGradient id=\"scar-scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n");
    for (f, c) in COLOUR_STOPS {
        svg.push_str(&format!(
            "<stop offset=\"{f}\" stop-color=\"{}\"/>\n",
            hex(c)
        ));
    }
    svg.push_str("</linearGradient></defs>\n");
    svg.push_str(&format!(
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"url(#scar-scale)\" stroke=\"#000000\" stroke-width=\"1\"/>\n",
        l.bar_x, l.bar_y, l.bar_w, l.bar_h
    ));
    for (n, value) in ticks(options.max_percent).iter().enumerate() {
        let y = l.bar_y + l.bar_h * (1.0 - n as f64 / 4.0);
        svg.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#000000\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{:.1}\">{}</text>\n",
            l.bar_x + l.bar_w,
            l.bar_x + l.bar_w + font * 0.3,
            l.bar_x + l.bar_w + font * 0.45,
            y + font * 0.3,
            font * 0.75,
            tick_label(*value)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{:.1}\">scar</text>\n",
        l.bar_x,
        l.bar_y - font * 0.5,
        font * 0.75
    ));
    svg.push_str("</svg>\n");
    Ok(svg)
}

/// 3×5 bitmap glyphs (rows top to bottom, bit 2 = left column).
fn glyph(ch: char) -> Option<[u8; 5]> {
    Some(match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '%' => [5, 1, 2, 4, 5],
        _ => return None,
    })
}

/// An RGB canvas.
struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let at = 3 * (y as usize * self.width + x as usize);
        if let Some(px) = self.rgb.get_mut(at..at + 3) {
            px.copy_from_slice(&c);
        }
    }

    /// Text with its centre at `(cx, cy)`, `scale` pixels per glyph dot.
    fn text(&mut self, text: &str, cx: f64, cy: f64, scale: i64, c: [u8; 3]) {
        let glyphs: Vec<[u8; 5]> = text.chars().filter_map(glyph).collect();
        let w = glyphs.len() as i64 * 4 * scale - scale;
        let x0 = cx.round() as i64 - w / 2;
        let y0 = cy.round() as i64 - 5 * scale / 2;
        for (g, rows) in glyphs.iter().enumerate() {
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(
                                    x0 + g as i64 * 4 * scale + col * scale + dx,
                                    y0 + row as i64 * scale + dy,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The bull's-eye of `stats` as a PNG file (same geometry as the SVG;
/// segment numbers and colour-bar ticks in a bitmap font; no title and no
/// per-segment %).
pub fn render_png(stats: &SegmentStats, options: &BullseyeOptions) -> Result<Vec<u8>> {
    options.validate()?;
    let size = f64::from(options.size_px);
    let l = Layout::new(size, 0.0);
    let (width, height) = (l.width as usize, l.height as usize);
    let mut canvas = Canvas {
        width,
        height,
        rgb: vec![255; width * height * 3],
    };
    let line_px = (size / 320.0).max(0.75);
    let boundary = |r: f64, deg: f64, s: &Sector| -> bool {
        let r_px = r * l.radius;
        let near_ring = [s.r_in, s.r_out]
            .iter()
            .any(|edge| *edge > 0.0 && (r_px - edge * l.radius).abs() < line_px);
        let near_spoke = s.end_deg - s.start_deg < 360.0
            && [s.start_deg, s.end_deg].iter().any(|edge| {
                (r_px * (deg - edge).to_radians().sin()).abs() < line_px
                    && (deg - edge).to_radians().cos() > 0.0
            });
        near_ring || near_spoke
    };
    // 2×2 supersampling on the wheel.
    for y in 0..height {
        for x in 0..width {
            let (mut acc, mut hits) = ([0.0f64; 3], 0);
            for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                let dx = x as f64 + sx - l.cx;
                let dy = l.cy - (y as f64 + sy);
                let r = (dx * dx + dy * dy).sqrt() / l.radius;
                let deg = dy.atan2(dx).to_degrees();
                let c = match segment_at(r, deg) {
                    Some(s) if boundary(r, deg.rem_euclid(360.0), &s) => [255, 255, 255],
                    Some(s) => fill_of(stats, s.segment, options.max_percent).0,
                    None => [255, 255, 255],
                };
                for a in 0..3 {
                    acc[a] += f64::from(c[a]);
                }
                hits += 1;
            }
            canvas.set(
                x as i64,
                y as i64,
                acc.map(|v| (v / f64::from(hits)).round() as u8),
            );
        }
    }
    let scale = ((size / 160.0).round() as i64).max(1);
    if options.show_numbers {
        for s in sectors() {
            let (fill, _) = fill_of(stats, s.segment, options.max_percent);
            let (r_mid, deg_mid) = if s.r_in == 0.0 {
                (0.0, 0.0)
            } else {
                (0.5 * (s.r_in + s.r_out), 0.5 * (s.start_deg + s.end_deg))
            };
            let (x, y) = l.point(r_mid, deg_mid);
            canvas.text(&s.segment.to_string(), x, y, scale, text_colour(fill));
        }
    }
    // Colour bar with a black frame and ticks.
    let (bx0, by0) = (l.bar_x.round() as i64, l.bar_y.round() as i64);
    let (bx1, by1) = (
        (l.bar_x + l.bar_w).round() as i64,
        (l.bar_y + l.bar_h).round() as i64,
    );
    for y in by0..=by1 {
        let f = 1.0 - (y - by0) as f64 / (by1 - by0).max(1) as f64;
        for x in bx0..=bx1 {
            let edge = x == bx0 || x == bx1 || y == by0 || y == by1;
            canvas.set(x, y, if edge { [0, 0, 0] } else { colour(f) });
        }
    }
    for (n, value) in ticks(options.max_percent).iter().enumerate() {
        let y = (l.bar_y + l.bar_h * (1.0 - n as f64 / 4.0)).round() as i64;
        for x in bx1..bx1 + 2 * scale {
            canvas.set(x, y, [0, 0, 0]);
        }
        let label = format!("{:.0}%", value);
        let w = label.len() as f64 * 4.0 * scale as f64;
        canvas.text(
            &label,
            bx1 as f64 + 3.0 * scale as f64 + w / 2.0,
            y as f64,
            scale,
            [0, 0, 0],
        );
    }
    encode_png(width, height, &canvas.rgb)
}

fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    crate::io::png::encode_rgb(width, height, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smile::stats::SegmentStat;

    fn stats(percent: impl Fn(u8) -> f64) -> SegmentStats {
        let per_segment = std::array::from_fn(|i| {
            let p = percent(i as u8 + 1);
            SegmentStat {
                segment: i as u8 + 1,
                myocardium_ml: 10.0,
                scar_ml: p / 10.0,
                mvo_ml: 0.0,
                scar_percent: p,
            }
        });
        SegmentStats {
            per_segment,
            unassigned: SegmentStat::default(),
            total_myocardium_ml: 170.0,
            total_scar_ml: 0.0,
            total_mvo_ml: 0.0,
            burden: 0.0,
        }
    }

    #[test]
    fn layout_follows_the_aha_convention() {
        // Segment 1 at 12 o'clock, 2 and 3 on the left (septum), 4 at 6 o'clock, 6 upper right.
        assert_eq!(segment_at(0.9, 90.0).unwrap().segment, 1);
        assert_eq!(segment_at(0.9, 150.0).unwrap().segment, 2);
        assert_eq!(segment_at(0.9, 210.0).unwrap().segment, 3);
        assert_eq!(segment_at(0.9, 270.0).unwrap().segment, 4);
        assert_eq!(segment_at(0.9, 330.0).unwrap().segment, 5);
        assert_eq!(segment_at(0.9, 30.0).unwrap().segment, 6);
        assert_eq!(segment_at(0.6, 160.0).unwrap().segment, 8);
        assert_eq!(segment_at(0.4, 180.0).unwrap().segment, 14);
        assert_eq!(segment_at(0.4, 0.0).unwrap().segment, 16);
        assert_eq!(segment_at(0.1, 123.0).unwrap().segment, 17);
        assert!(segment_at(1.1, 0.0).is_none());
        assert_eq!(colour(0.0), [255, 255, 204]);
        assert_eq!(colour(2.0), [128, 0, 38]);
    }

    #[test]
    fn svg_has_all_segments_and_escapes_the_title() {
        let svg = render_svg(
            &stats(|s| f64::from(s) * 5.0),
            &BullseyeOptions {
                title: Some("A & <B>".into()),
                ..BullseyeOptions::default()
            },
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for s in 1..=17 {
            assert!(svg.contains(&format!("\">{s}</text>")), "number {s}");
            assert!(svg.contains(&format!("<title>segment {s}</title>")));
        }
        assert!(svg.contains("A &amp; &lt;B&gt;"));
        assert!(svg.contains("85%"), "segment 17 at 85 %");
        assert!(render_svg(
            &stats(|_| 0.0),
            &BullseyeOptions {
                size_px: 10,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn png_decodes_to_the_expected_pixels() {
        let s = stats(|seg| if seg == 17 { 100.0 } else { 0.0 });
        let opts = BullseyeOptions {
            size_px: 200,
            ..Default::default()
        };
        let png = render_png(&s, &opts).unwrap();
        let (width, height, rgb) = crate::io::png::decode_rgb(&png).unwrap();
        assert_eq!((width, height), (260, 200));
        let pixel = |x: usize, y: usize| {
            let at = (y * width + x) * 3;
            [rgb[at], rgb[at + 1], rgb[at + 2]]
        };
        // Apex (segment 17) is fully scarred: dark red near the centre, off the digits.
        assert_eq!(pixel(100 - 15, 100), [128, 0, 38]);
        // Basal ring at 0 % (segment 1, beside its number): the lightest colour.
        assert_eq!(pixel(88, 28), [255, 255, 204]);
        // Corner: background.
        assert_eq!(pixel(0, 0), [255, 255, 255]);
    }
}
