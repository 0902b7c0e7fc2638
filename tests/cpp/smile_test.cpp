// Exercises the SMILE part of bindings/cpp/claim.hpp on the synthetic LV of
// tests/c/synthetic_lv.h: parcellation, parameter builder, one-shot and
// context draws, statistics, bull's-eye, and errors as exceptions.
// Usage: smile_test <scratch-dir>. Exits 0 when every check passed.
#include "claim.hpp"

#include "../c/synthetic_lv.h"

#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <type_traits>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

void expect(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
        ++failures;
        std::cerr << "FAIL " << what << "\n";
    } else {
        std::cout << "ok   " << what << "\n";
    }
}

template <typename F>
void expect_throws(F&& f, claim_status expected, const std::string& needle, const std::string& what) {
    try {
        f();
    } catch (const claim::Error& e) {
        const std::string message = e.what();
        expect(e.status() == expected && message.find(needle) != std::string::npos,
               what + " -> " + e.status_name() + ": " + message);
        return;
    }
    expect(false, what + ": did not throw");
}

static_assert(!std::is_copy_constructible_v<claim::SmileContext>, "SmileContext is move-only");
static_assert(std::is_nothrow_move_constructible_v<claim::SmileContext>, "SmileContext moves");

struct Heart {
    claim_label_scheme scheme = claim::default_label_scheme();
    std::vector<std::uint8_t> voxels = std::vector<std::uint8_t>(SYNTHETIC_LV_VOXELS);
    claim_volume labels{};

    Heart() {
        scheme.rv = 5;
        synthetic_lv_labels(&scheme, voxels.data());
        labels = synthetic_lv_volume(CLAIM_VOXEL_U8, voxels.data());
    }

    bool myocardium(std::size_t n) const {
        return voxels[n] == scheme.myocardium || voxels[n] == scheme.scar || voxels[n] == scheme.mvo;
    }
};

void parameters() {
    const claim::SmileParams params = claim::SmileParams()
                                          .pattern(CLAIM_PATTERN_ISCHEMIC)
                                          .territory(CLAIM_TERRITORY_RCA)
                                          .burden(0.25)
                                          .transmurality(0.9)
                                          .mvo(true);
    const claim_smile_params& c = params;
    expect(c.struct_size == sizeof(claim_smile_params) && c.territory == CLAIM_TERRITORY_RCA &&
               c.burden == 0.25 && c.transmurality == 0.9 && c.mvo == 1 && c.labels == nullptr &&
               c.aha == nullptr,
           "SmileParams builder fills claim_smile_params (NULL scheme and AHA options = defaults)");
    const claim::SmileParams drawn = claim::SmileParams(params).random_burden().random_transmurality();
    expect(drawn.c().burden < 0.0 && drawn.c().transmurality < 0.0, "random_burden/transmurality");
    claim_label_scheme rv = claim::default_label_scheme();
    rv.rv = 5;
    const claim::SmileParams with_rv = claim::SmileParams().labels(rv);
    const claim::SmileParams copied = with_rv;
    rv.rv = 6;
    expect(copied.c().labels != with_rv.c().labels && copied.c().labels->rv == 5 &&
               with_rv.c().labels->rv == 5,
           "SmileParams copies own their label scheme");
    const claim_aha_params aha = claim::default_aha_params();
    expect(aha.struct_size == sizeof(claim_aha_params) && aha.rotation_deg == 0.0 &&
               aha.long_axis[0] == 0.0 && aha.labels == nullptr,
           "default_aha_params()");
}

void draws(const Heart& heart) {
    claim_aha_params aha = claim::default_aha_params();
    aha.labels = &heart.scheme;
    const std::vector<std::uint8_t> segments = claim::aha_segments(heart.labels, aha);
    std::size_t wrong = 0;
    for (std::size_t n = 0; n < segments.size(); ++n) {
        const bool in_segment = segments[n] >= 1 && segments[n] <= 17;
        if (in_segment != heart.myocardium(n) || (!in_segment && segments[n] != 0)) ++wrong;
    }
    expect(segments.size() == SYNTHETIC_LV_VOXELS && wrong == 0,
           "aha_segments: 1..17 exactly on the myocardium");

    const claim::SmileParams params =
        claim::SmileParams().territory(CLAIM_TERRITORY_LAD).burden(0.2).labels(heart.scheme);
    const auto first = claim::smile_generate<std::uint8_t>(heart.labels, params, 7);
    const auto again = claim::smile_generate<std::uint8_t>(heart.labels, params, 7);
    const auto other = claim::smile_generate<std::uint8_t>(heart.labels, params, 8);
    expect(first == again, "smile_generate: same seed, same mask");
    expect(first != other, "smile_generate: another seed, another mask");
    const auto as_float = claim::smile_generate<float>(heart.labels, params, 7);
    bool same = as_float.size() == first.size();
    for (std::size_t n = 0; same && n < first.size(); ++n) same = as_float[n] == first[n];
    expect(same, "smile_generate<float> holds the same labels");

    claim_volume mask = heart.labels;
    mask.data = const_cast<std::uint8_t*>(first.data());
    claim_volume segment_view = heart.labels;
    segment_view.data = const_cast<std::uint8_t*>(segments.data());
    const claim_aha_segment_stats stats = claim::aha_segment_stats_measure(mask, &segment_view, aha);
    expect(std::fabs(stats.burden - 0.2) <= 0.02, "aha_segment_stats_measure: burden within 0.02 of 0.2");
    const claim_aha_segment_stats parcellated = claim::aha_segment_stats_measure(mask, nullptr, aha);
    expect(std::memcmp(&stats, &parcellated, sizeof stats) == 0,
           "segment_stats without segments parcellates the same way");

    const claim::SmileContext context = claim::SmileContext::create(heart.labels, params);
    std::vector<std::int16_t> drawn(SYNTHETIC_LV_VOXELS);
    claim_volume out = heart.labels;
    out.voxel_type = CLAIM_VOXEL_I16;
    out.data = drawn.data();
    const claim_smile_info info = context.draw(7, out);
    same = true;
    for (std::size_t n = 0; n < first.size(); ++n) same = same && drawn[n] == first[n];
    expect(same && info.seed == 7 && info.territory == CLAIM_TERRITORY_LAD &&
               std::fabs(info.burden - stats.burden) < 1e-12,
           "SmileContext::draw matches smile_generate and reports the draw");

    claim_bullseye_options options = claim::default_bullseye_options();
    options.title = "synthetic LV";
    const std::string svg = claim::bullseye_render_svg(stats, options);
    expect(svg.rfind("<svg", 0) == 0 && svg.find("synthetic LV") != std::string::npos &&
               svg.find('\0') == std::string::npos,
           "bullseye_svg: a whole SVG document");
    const std::vector<std::uint8_t> png = claim::bullseye_render_png(stats);
    expect(png.size() > 8 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G', "bullseye_png");

    claim_aha_params with_scheme = aha;
    const std::string same_json = claim::labels_evaluate_json(mask, mask, &with_scheme);
    expect(same_json.front() == '{' && same_json.find("\"dice\": 1.0") != std::string::npos &&
               same_json.find('\0') == std::string::npos,
           "labels_evaluate_json: a map against itself has Dice 1");
    const std::string other_json = claim::labels_evaluate_json(mask, heart.labels, &with_scheme);
    expect(other_json.find("\"structure\": \"scar\"") != std::string::npos &&
               other_json != same_json,
           "labels_evaluate_json: a scar against none differs");
}

void errors(const Heart& heart) {
    const claim::SmileParams too_much =
        claim::SmileParams().burden(1.5).labels(heart.scheme);
    expect_throws([&] { claim::smile_generate<std::uint8_t>(heart.labels, too_much, 1); },
                  CLAIM_ERR_INVALID_ARGUMENT, "params.burden", "burden 1.5 throws");
    const claim::SmileParams no_rv = claim::SmileParams().burden(0.2);
    expect_throws([&] { claim::smile_generate<std::uint8_t>(heart.labels, no_rv, 1); },
                  CLAIM_ERR_INVALID_ARGUMENT, "5", "the RV label outside the scheme throws");
    expect_throws([&] { claim::SmileContext::create(heart.labels, too_much); },
                  CLAIM_ERR_INVALID_ARGUMENT, "params.burden", "SmileContext::create throws");

    std::vector<std::uint8_t> small(8, 0xAB);
    claim_volume out = heart.labels;
    out.dims[0] = out.dims[1] = out.dims[2] = 2;
    out.data = small.data();
    const claim::SmileParams ok = claim::SmileParams().burden(0.2).labels(heart.scheme);
    expect_throws([&] { claim::smile_generate(heart.labels, ok, 1, out); },
                  CLAIM_ERR_INVALID_ARGUMENT, "out_labels.dims", "mismatched dims throw");
    expect(small == std::vector<std::uint8_t>(8, 0xAB), "refused output untouched");

    const claim::SmileContext empty;
    expect_throws([&] { empty.draw(1, out); }, CLAIM_ERR_INVALID_ARGUMENT, "ctx must not be NULL",
                  "draw from an empty SmileContext throws");
    claim_aha_segment_stats bad{};
    bad.struct_size = sizeof bad;
    bad.scar_percent[3] = -1.0;
    expect_throws([&] { claim::bullseye_render_svg(bad); }, CLAIM_ERR_INVALID_ARGUMENT,
                  "stats.scar_percent[3]", "bullseye_svg of negative stats throws");
    claim_volume shifted = heart.labels;
    shifted.origin[0] += 5.0;
    expect_throws([&] { claim::labels_evaluate_json(heart.labels, shifted); },
                  CLAIM_ERR_INVALID_ARGUMENT, "origin", "labels_evaluate_json of other grids throws");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " <scratch-dir>\n";
        return 2;
    }
    try {
        const Heart heart;
        parameters();
        draws(heart);
        errors(heart);
    } catch (const claim::Error& e) {
        ++failures;
        std::cerr << "FAIL unexpected claim::Error " << e.status_name() << ": " << e.what() << "\n";
    }
    std::cout << checks << " checks, " << failures << " failed\n";
    return failures == 0 ? 0 : 1;
}
