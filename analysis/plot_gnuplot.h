#pragma once
// Runs gnuplot (Debian package gnuplot-nox) on one figure: a data file plus a script that draws
// it. gnuplot rather than matplotlib: it is a single small package with no Python stack, its
// pngcairo and svg terminals are byte-for-byte deterministic for the same input (checked in
// plot_test.cc), and the data it reads is a plain text file we keep beside the image, so a
// reader (and the tests) can check every plotted number against the CSV.
#include <array>
#include <filesystem>
#include <string>
#include <string_view>

namespace kvsim::analysis {

// Line colours of every figure: Okabe & Ito's colour-blind-safe palette, then Tol's "muted" for
// more than seven series.
inline constexpr std::array<std::string_view, 10> kPlotPalette = {
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
    "#56B4E9", "#882255", "#44AA99", "#999933", "#AA4499"};

// One figure. The script is a gnuplot body without terminal/output settings: it refers to the
// data file as `DATA` (a gnuplot string variable) and must contain exactly one `plot` (or one
// `set multiplot` ... `unset multiplot` block); RenderFigure runs it once per terminal.
struct GnuplotFigure {
  std::string name;    // file stem: <name>.png, <name>.svg, <name>.dat
  std::string data;    // contents of <name>.dat
  std::string script;  // gnuplot commands
  int width_px = 960;
  int height_px = 600;
};

// Writes <name>.dat, <name>.png and <name>.svg into `out_dir`. Everything is rendered in a
// staging directory inside `out_dir` first and renamed into place only when gnuplot succeeded
// and both images are non-empty, so a failure leaves none of the three files. Throws InputError
// if gnuplot is not installed (naming the package to install) or fails (quoting its stderr).
void RenderFigure(const GnuplotFigure& figure, const std::filesystem::path& out_dir);

// `text` as a double-quoted gnuplot string literal (backslashes and quotes escaped, control
// characters dropped). Use with the `noenhanced` terminals RenderFigure sets, so '_' and '^' in
// policy names print as themselves.
std::string GnuplotString(std::string_view text);

}  // namespace kvsim::analysis
