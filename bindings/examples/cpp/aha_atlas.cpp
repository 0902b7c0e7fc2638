// The C example (c/aha_atlas.c) through the C++ wrapper claim.hpp:
// failures are exceptions, handles free themselves.
//
//   aha_atlas_cpp AHA17_model_ED.nii.gz segments.nii.gz
#include <cstdio>
#include <cstdint>
#include <vector>

#include "claim.hpp"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s ATLAS.nii.gz SEGMENTS.nii.gz\n", argv[0]);
        return 2;
    }
    try {
        // readme:begin
        const claim::Image atlas = claim::Image::read(argv[1]);
        const claim_volume view = atlas.view();
        // The atlas stores int16 labels.
        const std::int16_t* voxels = atlas.data<std::int16_t>();
        const std::size_t count = claim::voxel_count(view);
        std::vector<std::uint8_t> relabelled(count);
        for (std::size_t n = 0; n < count; ++n) {
            const int v = static_cast<int>(voxels[n]);
            relabelled[n] = v >= 1 && v <= 17 ? 2 : v == 21 ? 1 : v == 24 ? 5 : 0;
        }
        claim_volume labels = view;
        labels.voxel_type = CLAIM_VOXEL_U8;
        labels.data = relabelled.data();

        claim_label_scheme scheme = claim::default_label_scheme();
        scheme.rv = 5;
        claim_aha_params params = claim::default_aha_params();
        params.labels = &scheme;
        claim::Image segments = claim::Image::create(labels, CLAIM_VOXEL_U8);
        claim_volume out = segments.view();
        claim::aha_parcellate(labels, params, out);

        std::size_t myocardium = 0, agree = 0;
        const auto* segment = static_cast<const std::uint8_t*>(out.data);
        for (std::size_t n = 0; n < count; ++n) {
            const int v = static_cast<int>(voxels[n]);
            if (v >= 1 && v <= 17) {
                ++myocardium;
                agree += segment[n] == v;
            }
        }
        segments.write(argv[2]);
        // readme:end
        std::printf("claim %s: %zu myocardium voxels, %.1f %% in the atlas's segment\n",
                    claim::version().c_str(), myocardium,
                    100.0 * static_cast<double>(agree) / static_cast<double>(myocardium));
        return myocardium > 0 && 10 * agree > 8 * myocardium ? 0 : 1;
    } catch (const claim::Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
