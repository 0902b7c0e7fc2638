// Exercises bindings/cpp/claim.hpp: round trip through a file, exceptions
// carrying status and message, move semantics. Usage: wrapper_test
// <scratch-dir>; $CLAIM_ATLAS_DIR, when set, adds the atlas checks.
// Exits 0 when every check passed.
#include "claim.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <type_traits>
#include <utility>

namespace {

int failures = 0;
int checks = 0;

void expect(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
        ++failures;
        std::cerr << "FAIL " << what << "\n";
    }
}

template <typename F>
claim::Error expect_throws(F&& f, claim_status expected, const std::string& what) {
    try {
        f();
    } catch (const claim::Error& e) {
        expect(expected == CLAIM_OK || e.status() == expected,
               what + ": status " + e.status_name());
        expect(std::strlen(e.what()) > 0, what + ": message not empty");
        std::cout << "ok   " << what << " -> " << e.status_name() << ": " << e.what() << "\n";
        return e;
    } catch (const std::exception& e) {
        expect(false, what + ": threw something else: " + e.what());
        return claim::Error(CLAIM_ERR_INTERNAL, e.what());
    }
    expect(false, what + ": did not throw");
    return claim::Error(CLAIM_OK, "");
}

static_assert(!std::is_copy_constructible_v<claim::Image>, "Image is move-only");
static_assert(!std::is_copy_assignable_v<claim::Image>, "Image is move-only");
static_assert(std::is_nothrow_move_constructible_v<claim::Image>, "Image moves cheaply");
static_assert(std::is_base_of_v<std::runtime_error, claim::Error>, "Error is a runtime_error");

void versions() {
    expect(claim::version() == claim_version_string(), "version()");
    expect(claim::abi_version() == CLAIM_ABI_VERSION, "abi_version()");
    expect(claim::abi_compatible(), "abi_compatible()");
    const claim_label_scheme labels = claim::default_label_scheme();
    expect(labels.struct_size == sizeof(claim_label_scheme) && labels.lv_cavity == 1 &&
               labels.myocardium == 2 && labels.scar == 3 && labels.mvo == 4 && labels.rv == -1,
           "default_label_scheme()");
    const claim_build_info build = claim::build_info();
    expect(build.struct_size == sizeof(claim_build_info) && (build.cuda_feature == 0 || build.cuda_feature == 1) &&
               build.kernel_archs[sizeof build.kernel_archs - 1] == '\0' &&
               build.cuda_status[sizeof build.cuda_status - 1] == '\0',
           "build_info()");
    std::cout << "ok   claim " << claim::version() << ", CUDA: " << build.cuda_status << "\n";
}

void round_trip(const std::string& dir) {
    claim::Geometry geometry;
    geometry.spacing = {{1.5, 1.5, 8.0}};
    geometry.origin = {{-20.0, 35.5, 7.0}};
    geometry.direction = {{1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0}};
    claim::Image image = claim::Image::create(CLAIM_VOXEL_I16, {{9, 7, 3}}, geometry);
    expect(image.dims() == std::array<std::uint64_t, 3>{{9, 7, 3}}, "created dims");
    expect(image.voxel_type() == CLAIM_VOXEL_I16, "created dtype");
    std::int16_t* voxels = image.data<std::int16_t>();
    for (std::uint64_t n = 0; n < image.voxel_count(); ++n) {
        voxels[n] = static_cast<std::int16_t>(static_cast<int>(n) * 13 - 400);
    }
    expect_throws([&] { image.data<float>(); }, CLAIM_ERR_INVALID_ARGUMENT, "data<float>() of an i16 image");

    const std::string path = dir + "/wrapper.nii.gz";
    image.write(path);
    const claim::Image again = claim::Image::read(path);
    expect(again.dims() == image.dims(), "re-read dims");
    expect(again.voxel_type() == CLAIM_VOXEL_I16, "re-read dtype");
    for (int a = 0; a < 3; ++a) {
        expect(std::fabs(again.spacing()[a] - geometry.spacing[a]) < 1e-6, "re-read spacing");
        expect(std::fabs(again.origin()[a] - geometry.origin[a]) < 1e-6, "re-read origin");
    }
    for (int a = 0; a < 9; ++a) {
        expect(std::fabs(again.direction()[a] - geometry.direction[a]) < 1e-6, "re-read direction");
    }
    if (again.dims() == image.dims() && again.voxel_type() == image.voxel_type()) {
        expect(std::memcmp(again.data<std::int16_t>(), voxels,
                           image.voxel_count() * sizeof(std::int16_t)) == 0,
               "re-read voxels (memcmp)");
    }
    std::cout << "ok   round trip through " << path << "\n";
}

void errors(const std::string& dir) {
    const claim::Error missing = expect_throws(
        [&] { claim::Image::read(dir + "/missing-file.nii.gz"); }, CLAIM_ERR_IO,
        "Image::read of a missing file");
    expect(std::string(missing.what()).find("missing-file.nii.gz") != std::string::npos,
           "the message names the file");
    // The exception's message is a copy: later calls do not change it.
    claim::Image::create(CLAIM_VOXEL_U8, {{2, 2, 2}});
    expect(std::string(missing.what()).find("missing-file.nii.gz") != std::string::npos,
           "the message outlives later calls");

    claim::Geometry nan_spacing;
    nan_spacing.spacing[2] = std::nan("");
    const claim::Error nan = expect_throws(
        [&] { claim::Image::create(CLAIM_VOXEL_F32, {{4, 4, 4}}, nan_spacing); },
        CLAIM_ERR_INVALID_ARGUMENT, "Image::create with NaN spacing");
    expect(std::string(nan.what()).find("spacing[2]") != std::string::npos,
           "the message names spacing[2]");
    expect_throws([&] { claim::Image::create(CLAIM_VOXEL_F32, {{0, 4, 4}}); },
                  CLAIM_ERR_INVALID_ARGUMENT, "Image::create with a zero dim");
    expect_throws([&] { claim::check(CLAIM_ERR_MODEL); }, CLAIM_ERR_MODEL, "check(CLAIM_ERR_MODEL)");
}

void moves(const std::string& dir) {
    claim::Image a = claim::Image::create(CLAIM_VOXEL_U8, {{3, 3, 3}});
    const claim_image* raw = a.get();
    claim::Image b = std::move(a);
    expect(!a && a.get() == nullptr, "moved-from Image is empty");
    expect(b && b.get() == raw, "moved-to Image owns the handle");
    expect_throws([&] { a.view(); }, CLAIM_ERR_INVALID_ARGUMENT, "view() of a moved-from Image");
    expect_throws([&] { a.write(dir + "/never.nii"); }, CLAIM_ERR_INVALID_ARGUMENT,
                  "write() of a moved-from Image");

    claim::Image c = claim::Image::create(CLAIM_VOXEL_F32, {{2, 2, 2}});
    c = std::move(b);  // frees c's old image
    expect(c.get() == raw && !b, "move assignment transfers ownership");
    expect(c.dims() == std::array<std::uint64_t, 3>{{3, 3, 3}}, "moved image still works");

    claim_image* released = c.release();
    expect(released == raw && !c, "release() gives up ownership");
    claim_image_free(released);
    std::cout << "ok   move semantics\n";
}

void atlas() {
    const char* dir = std::getenv("CLAIM_ATLAS_DIR");
    if (dir == nullptr || dir[0] == '\0') {
        std::cout << "skipped: atlas checks (CLAIM_ATLAS_DIR not set)\n";
        return;
    }
    const claim::Image image = claim::Image::read(std::string(dir) + "/AHA17_model_ED.nii.gz");
    expect(image.dims() == std::array<std::uint64_t, 3>{{140, 140, 56}}, "atlas dims");
    expect(std::fabs(image.spacing()[2] - 2.0) < 1e-4, "atlas spacing");
    std::cout << "ok   atlas read through claim.hpp\n";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " <scratch-dir>\n";
        return 2;
    }
    const std::string dir = argv[1];
    // A stray exception is a failure with its message, not a terminate().
    try {
        versions();
        round_trip(dir);
        errors(dir);
        moves(dir);
        atlas();
    } catch (const claim::Error& e) {
        ++failures;
        std::cerr << "FAIL unexpected claim::Error " << e.status_name() << ": " << e.what() << "\n";
    }
    std::cout << checks << " checks, " << failures << " failed\n";
    return failures == 0 ? 0 : 1;
}
