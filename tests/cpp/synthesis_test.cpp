// Exercises the diffusion part of bindings/cpp/claim.hpp: loading the small
// 2-D fixture model, a raw evaluation, synthesis with a progress lambda,
// cancellation and errors as exceptions.
// Usage: synthesis_test <scratch-dir>. Exits 0 when every check passed.
#include "claim.hpp"

#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#ifndef CLAIM_FIXTURES
#define CLAIM_FIXTURES "tests/fixtures"
#endif

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

constexpr std::uint64_t NI = 32, NJ = 32, NK = 2;

}  // namespace

int main() {
    try {
        const auto model =
            claim::DiffusionModel::load(std::string(CLAIM_FIXTURES) + "/denoiser/unet2d_weights.safetensors");
        const auto info = model.info();
        expect(info.channels == 1 && info.cond_dim == 16 && info.size_multiple == 4, "model info");

        std::vector<float> x(2 * 24 * 24, 0.25f);
        std::vector<float> cond(2 * 16, 1.0f / 16);
        const auto eps = model.predict_noise(x, {2, 1, 1, 24, 24}, {0, 150}, &cond);
        const auto null = model.predict_noise(x, {2, 1, 1, 24, 24}, {0, 150});
        expect(eps.size() == x.size() && std::isfinite(eps[0]) && eps != null,
               "predict_noise with a condition and with the null condition");

        std::vector<std::uint8_t> labels(NI * NJ * NK, 0);
        std::vector<float> image(labels.size()), out(labels.size());
        for (std::uint64_t k = 0; k < NK; ++k)
            for (std::uint64_t j = 0; j < NJ; ++j)
                for (std::uint64_t i = 0; i < NI; ++i) {
                    const double dx = i - 15.5, dy = j - 15.5, r = std::sqrt(dx * dx + dy * dy);
                    const std::size_t n = i + NI * (j + NJ * k);
                    labels[n] = r < 6 ? 1 : r < 10 ? (k == 0 && dx > 3 ? 3 : 2) : 0;
                    image[n] = static_cast<float>(labels[n] * 100 + (i * 5 + j) % 7);
                }
        const auto vi = claim::make_volume(CLAIM_VOXEL_F32, {NI, NJ, NK}, image.data());
        const auto vl = claim::make_volume(CLAIM_VOXEL_U8, {NI, NJ, NK}, labels.data());
        auto vo = claim::make_volume(CLAIM_VOXEL_F32, {NI, NJ, NK}, out.data());
        const auto params = claim::SynthesisParams().seed(3).jumps(8, 2, 2).crop_size(24);
        std::uint64_t last_done = 0, last_total = 0;
        claim::diffusion_synthesize(model, vi, vl, params, vo, [&](std::uint64_t d, std::uint64_t t) {
            last_done = d;
            last_total = t;
            return true;
        });
        bool outside_same = true, lesion_changed = false;
        for (std::size_t n = 0; n < labels.size(); ++n) {
            if (labels[n] == 3) lesion_changed |= out[n] != image[n];
            else outside_same &= std::memcmp(&out[n], &image[n], sizeof(float)) == 0;
        }
        expect(outside_same && lesion_changed, "synthesize changes only the scar");
        expect(last_done == last_total && last_total == 14, "progress reaches 8 + 3 jumps x 2 = 14");
        expect(info.frames == 1 && info.histogram_count == 1, "one frame, one histogram");
        const auto measured = claim::histogram_measure_channels(model, vi, vl, params);
        expect(measured.size() == CLAIM_HISTOGRAM_BINS, "one channel: 16 measured values");
        try {
            const auto two = claim::SynthesisParams(params).channel_labels({3, 4});
            claim::diffusion_synthesize(model, vi, vl, two, vo);
            expect(false, "a two-label map on a one-channel model throws");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_INVALID_ARGUMENT &&
                       std::string(e.what()).find("1 channel(s)") != std::string::npos,
                   std::string("channel map refused: ") + e.what());
        }

        try {
            claim::diffusion_synthesize(model, vi, vl, params, vo, [](std::uint64_t d, std::uint64_t) { return d < 2; });
            expect(false, "cancel throws");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_CANCELLED, std::string("cancel throws: ") + e.what());
        }
        try {
            claim::diffusion_synthesize(model, vi, vl, params, vo, [](std::uint64_t, std::uint64_t) -> bool {
                throw std::runtime_error("from the callback");
            });
            expect(false, "a callback's exception is rethrown");
        } catch (const std::runtime_error& e) {
            expect(std::string(e.what()) == "from the callback", "a callback's exception is rethrown");
        }
        try {
            auto cuda = claim::default_load_options();
            cuda.device = CLAIM_DEVICE_CUDA;
            claim::DiffusionModel::load(std::string(CLAIM_FIXTURES) + "/denoiser/unet2d_weights.safetensors",
                                        cuda);
            expect(false, "CUDA refused");
        } catch (const claim::Error& e) {
            expect(e.status() == CLAIM_ERR_DEVICE, std::string("CUDA refused: ") + e.what());
        }
    } catch (const std::exception& e) {
        expect(false, std::string("unexpected exception: ") + e.what());
    }
    std::cout << checks << " checks, " << failures << " failures\n";
    return failures == 0 ? 0 : 1;
}
