// Exercises the segmentation part of bindings/cpp/claim.hpp on the committed
// nnU-Net results folder: RAII loading with fold selection, moves, info,
// a raw evaluation, segmentation with a progress lambda, cancellation, a
// callback's exception, and errors as exceptions.
// Usage: segment_test <scratch-dir> <results-folder>. Exits 0 when every
// check passed.
#include "claim.hpp"

#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <utility>
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

// 64 x 64 (one patch) x 2 slices, no zero voxel: no crop, no padding.
constexpr std::uint64_t NI = 64, NJ = 64, NK = 2;

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " <scratch-dir> <results-folder>\n";
        return 2;
    }
    const std::string folder = argv[2];
    try {
        auto loaded = claim::Segmenter::load(folder, claim::SegmenterOptions().folds({0}));
        expect(static_cast<bool>(loaded), "load fold 0");
        const claim::Segmenter model = std::move(loaded);
        expect(!loaded && model, "a moved-from Segmenter is empty");

        const auto info = model.info();
        expect(info.spatial_dims == 2 && info.num_classes == 5 && info.fold_count == 1 &&
                   info.folds[0] == 0 && model.configuration() == "2d",
               "info: 2-D, 5 classes, fold 0, configuration 2d");

        std::vector<float> x(2 * 64 * 64);
        for (std::size_t n = 0; n < x.size(); ++n) x[n] = std::sin(0.01f * static_cast<float>(n));
        const auto logits = model.predict_logits(x, {2, 1, 64, 64});
        bool finite = logits.size() == 2 * 5 * 64 * 64;
        for (const float v : logits) finite &= std::isfinite(v);
        expect(finite, "predict_logits: [2, 5, 64, 64], finite");

        std::vector<float> image(NI * NJ * NK);
        for (std::uint64_t k = 0; k < NK; ++k)
            for (std::uint64_t j = 0; j < NJ; ++j)
                for (std::uint64_t i = 0; i < NI; ++i) {
                    const double dx = i - 31.5, dy = j - 30.5, r = std::sqrt(dx * dx + dy * dy);
                    image[i + NI * (j + NJ * k)] =
                        static_cast<float>(r < 8 ? 400 : r < 12 ? 120 : 60 + (i * 7 + j * 3) % 13);
                }
        claim::Geometry geometry;
        geometry.spacing = {{1.5625, 1.5625, 9.0}};
        geometry.origin = {{10.0, -20.0, 30.0}};
        const auto vi = claim::make_volume(CLAIM_VOXEL_F32, {NI, NJ, NK}, image.data(), geometry);

        std::uint64_t calls = 0, last_done = 0, last_total = 0;
        bool monotone = true;
        const auto labels = claim::segmenter_segment(model, vi, claim::SegmentationParams(),
                                           [&](std::uint64_t done, std::uint64_t total) {
                                               monotone &= calls == done;
                                               ++calls;
                                               last_done = done;
                                               last_total = total;
                                               return true;
                                           });
        bool in_scheme = labels.size() == NI * NJ * NK;
        for (const auto l : labels) in_scheme &= l <= 4;
        expect(in_scheme, "segment: one EMIDEC label per voxel");
        // One window per slice, 4 mirror passes, one fold.
        expect(monotone && last_done == last_total && last_total == NK * 4,
               "progress 0..8: 2 slices x 4 mirror passes");

        std::vector<std::uint8_t> out(labels.size(), 0xAB);
        auto vo = claim::make_volume(CLAIM_VOXEL_U8, {NI, NJ, NK}, out.data());
        const auto quick = claim::SegmentationParams().mirroring(false).step_size(1.0f).postprocess(false);
        claim::segmenter_segment(model, vi, quick, vo);
        expect(vo.origin[0] == 10.0 && vo.spacing[2] == 9.0, "output geometry is the image's");

        try {
            std::fill(out.begin(), out.end(), 0xAB);
            claim::segmenter_segment(model, vi, claim::SegmentationParams(), vo,
                           [](std::uint64_t done, std::uint64_t) { return done < 2; });
            expect(false, "cancel throws");
        } catch (const claim::Error& e) {
            bool untouched = true;
            for (const auto v : out) untouched &= v == 0xAB;
            expect(e.status() == CLAIM_ERR_CANCELLED && untouched,
                   std::string("cancel throws, output untouched: ") + e.what());
        }
        try {
            claim::segmenter_segment(model, vi, claim::SegmentationParams(), vo, [](std::uint64_t, std::uint64_t) -> bool {
                throw std::runtime_error("from the callback");
            });
            expect(false, "a callback's exception is rethrown");
        } catch (const std::runtime_error& e) {
            expect(std::string(e.what()) == "from the callback", "a callback's exception is rethrown");
        }
        try {
            claim::segmenter_segment(model, vi, claim::SegmentationParams().step_size(0.0f));
            expect(false, "step 0 throws");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_INVALID_ARGUMENT &&
                       std::string(e.what()).find("params.step_size") != std::string::npos,
                   std::string("step 0 throws: ") + e.what());
        }
        try {
            model.predict_logits(x, {1, 2, 64, 64});
            expect(false, "two channels throw");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_INVALID_ARGUMENT, std::string("two channels throw: ") + e.what());
        }
        try {
            claim::Segmenter::load(std::string(argv[1]) + "/no_such_model");
            expect(false, "a missing model throws");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_IO, std::string("a missing model throws: ") + e.what());
        }
        try {
            claim::Segmenter::load(folder, claim::SegmenterOptions().configuration("3d_lowres"));
            expect(false, "an unknown configuration throws");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_INVALID_ARGUMENT,
                   std::string("an unknown configuration throws: ") + e.what());
        }
        try {
            const claim::Segmenter empty;
            empty.info();
            expect(false, "an empty Segmenter throws");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_INVALID_ARGUMENT, std::string("an empty Segmenter throws: ") + e.what());
        }
    } catch (const std::exception& e) {
        expect(false, std::string("unexpected exception: ") + e.what());
    }
    std::cout << checks << " checks, " << failures << " failures\n";
    return failures == 0 ? 0 : 1;
}
