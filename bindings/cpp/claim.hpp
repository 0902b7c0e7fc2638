// claim.hpp: header-only C++17 wrapper over the claim C API (claim.h).
//
// Failures become exceptions (claim::Error, carrying the claim_status and
// the library's message); library handles become move-only RAII types that
// free themselves. Everything here is a thin inline layer: the C API stays
// the contract, and each C area gets a class or function here in the same
// shape: call the C function, pass its status to check(), wrap any returned
// handle in a Handle<...>. Areas: versions and labels, Image (NIfTI I/O),
// SMILE (aha_segment(s), SmileParams, smile_generate, SmileContext,
// segment_stats, bullseye_svg / bullseye_png, labels_evaluate_json), diffusion (DiffusionModel,
// SynthesisParams, synthesize, measure_histogram), segmentation (Segmenter,
// SegmenterOptions, SegmentationParams, segment).
#ifndef CLAIM_HPP
#define CLAIM_HPP

#include "claim.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace claim {

/// A failed claim_* call: the status code and the library's message.
class Error : public std::runtime_error {
public:
    Error(claim_status status, const std::string& message)
        : std::runtime_error(message), status_(status) {}

    /// The CLAIM_ERR_* code.
    claim_status status() const noexcept { return status_; }

    /// The code's name, e.g. "CLAIM_ERR_IO".
    const char* status_name() const noexcept { return claim_status_str(status_); }

private:
    claim_status status_;
};

/// Throws claim::Error for any status but CLAIM_OK, with the calling
/// thread's last error message (copied, so it outlives later calls).
inline void check(claim_status status) {
    if (status != CLAIM_OK) {
        const char* message = claim_last_error_message();
        throw Error(status, message != nullptr && message[0] != '\0'
                                ? std::string(message)
                                : std::string(claim_status_str(status)));
    }
}

/// The library's release, e.g. "0.1.0".
inline std::string version() { return claim_version_string(); }

/// The library's ABI version, major << 16 | minor.
inline std::uint32_t abi_version() { return claim_abi_version(); }

/// True when the loaded library can serve this header: same major ABI
/// version, minor at least the header's.
inline bool abi_compatible() {
    const std::uint32_t v = claim_abi_version();
    // Compared as signed so a header minor of 0 does not trip -Wtype-limits.
    const long library_minor = static_cast<long>(v & 0xffffu);
    return (v >> 16) == CLAIM_ABI_VERSION_MAJOR && library_minor >= long{CLAIM_ABI_VERSION_MINOR};
}

/// What this build is and finds on this machine (claim_build_info_get):
/// the CUDA back-end, its kernels' GPU targets, the driver and devices.
inline claim_build_info build_info() {
    claim_build_info info{};
    info.struct_size = sizeof(claim_build_info);
    check(claim_build_info_get(&info));
    return info;
}

/// The default (EMIDEC) label scheme: 1 LV cavity, 2 myocardium, 3 scar,
/// 4 MVO, no RV (rv = -1). Change fields, then pass it in parameter structs.
inline claim_label_scheme default_label_scheme() {
    claim_label_scheme scheme{};
    CLAIM_DEFAULT(claim_label_scheme, &scheme);
    return scheme;
}

/// The CLAIM_VOXEL_* of a voxel type (uint8_t, int16_t, uint16_t, int32_t, float).
template <typename T>
constexpr claim_voxel_type voxel_type_of() {
    static_assert(std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int16_t> ||
                      std::is_same_v<T, std::uint16_t> || std::is_same_v<T, std::int32_t> ||
                      std::is_same_v<T, float>,
                  "claim volumes hold uint8_t, int16_t, uint16_t, int32_t or float");
    if constexpr (std::is_same_v<T, std::uint8_t>) return CLAIM_VOXEL_U8;
    else if constexpr (std::is_same_v<T, std::int16_t>) return CLAIM_VOXEL_I16;
    else if constexpr (std::is_same_v<T, std::uint16_t>) return CLAIM_VOXEL_U16;
    else if constexpr (std::is_same_v<T, std::int32_t>) return CLAIM_VOXEL_I32;
    else return CLAIM_VOXEL_F32;
}

/// Geometry of a voxel grid in LPS millimetres, as ITK: spacing, origin and
/// row-major direction whose columns are the i, j, k axes.
struct Geometry {
    std::array<double, 3> spacing{{1.0, 1.0, 1.0}};
    std::array<double, 3> origin{{0.0, 0.0, 0.0}};
    std::array<double, 9> direction{{1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0}};
};

/// A claim_volume viewing `data` (owned by the caller, not copied):
/// dims i (fastest), j, k.
inline claim_volume make_volume(claim_voxel_type voxel_type, const std::array<std::uint64_t, 3>& dims,
                                void* data, const Geometry& geometry = Geometry{}) {
    claim_volume v{};
    v.struct_size = sizeof(claim_volume);
    v.voxel_type = voxel_type;
    for (int a = 0; a < 3; ++a) {
        v.dims[a] = dims[a];
        v.spacing[a] = geometry.spacing[a];
        v.origin[a] = geometry.origin[a];
    }
    for (int a = 0; a < 9; ++a) v.direction[a] = geometry.direction[a];
    v.data = data;
    return v;
}

/// A move-only owner of a library handle `T`, freed by `Free` (which, like
/// every claim_*_free, accepts NULL).
template <typename T, void (*Free)(T*)>
class Handle {
public:
    Handle() noexcept = default;
    explicit Handle(T* raw) noexcept : raw_(raw) {}

    T* get() const noexcept { return raw_.get(); }
    T* release() noexcept { return raw_.release(); }
    explicit operator bool() const noexcept { return raw_ != nullptr; }

private:
    struct Deleter {
        void operator()(T* p) const noexcept { Free(p); }
    };
    std::unique_ptr<T, Deleter> raw_;
};

/// An image owned by the library (NIfTI I/O for harnesses). Move-only; a
/// moved-from Image is empty and any use of it throws claim::Error.
class Image {
public:
    Image() noexcept = default;

    /// Reads a .nii or .nii.gz file.
    static Image read(const std::string& path) {
        claim_image* raw = nullptr;
        check(claim_image_read(path.c_str(), &raw));
        return Image(raw);
    }

    /// A zero-filled image of `voxel_type` with the dims and geometry of `like`
    /// (`like.data` is not read).
    static Image create(const claim_volume& like, claim_voxel_type voxel_type) {
        claim_image* raw = nullptr;
        check(claim_image_create(&like, voxel_type, &raw));
        return Image(raw);
    }

    /// A zero-filled image with the given dims and geometry.
    static Image create(claim_voxel_type voxel_type, const std::array<std::uint64_t, 3>& dims,
                        const Geometry& geometry = Geometry{}) {
        return create(make_volume(voxel_type, dims, nullptr, geometry), voxel_type);
    }

    /// Writes a NIfTI-1 file, gzip-compressed when `path` ends in ".gz".
    void write(const std::string& path) const { check(claim_image_write(handle_.get(), path.c_str())); }

    /// Dtype, dims, geometry and a pointer to the voxels (valid while this
    /// Image lives and is not moved from).
    claim_volume view() const {
        claim_volume v{};
        v.struct_size = sizeof(claim_volume);
        check(claim_image_view(handle_.get(), &v));
        return v;
    }

    claim_voxel_type voxel_type() const { return view().voxel_type; }

    std::array<std::uint64_t, 3> dims() const {
        const claim_volume v = view();
        return {{v.dims[0], v.dims[1], v.dims[2]}};
    }

    std::uint64_t voxel_count() const {
        const auto d = dims();
        return d[0] * d[1] * d[2];
    }

    std::array<double, 3> spacing() const {
        const claim_volume v = view();
        return {{v.spacing[0], v.spacing[1], v.spacing[2]}};
    }

    std::array<double, 3> origin() const {
        const claim_volume v = view();
        return {{v.origin[0], v.origin[1], v.origin[2]}};
    }

    std::array<double, 9> direction() const {
        const claim_volume v = view();
        std::array<double, 9> d{};
        for (int a = 0; a < 9; ++a) d[a] = v.direction[a];
        return d;
    }

    Geometry geometry() const { return Geometry{spacing(), origin(), direction()}; }

    /// The voxels as `T`, i fastest; throws unless `T` matches the voxel type.
    template <typename T>
    T* data() {
        const claim_volume v = view();
        if (v.voxel_type != voxel_type_of<T>()) {
            throw Error(CLAIM_ERR_INVALID_ARGUMENT,
                        std::string("claim::Image::data: the image holds voxel type ") +
                            std::to_string(v.voxel_type) + ", not the requested " +
                            std::to_string(voxel_type_of<T>()));
        }
        return static_cast<T*>(v.data);
    }

    template <typename T>
    const T* data() const {
        return const_cast<Image*>(this)->data<T>();
    }

    /// The C handle, still owned by this Image (NULL when empty).
    const claim_image* get() const noexcept { return handle_.get(); }

    /// Gives up ownership: the caller must claim_image_free the result.
    claim_image* release() noexcept { return handle_.release(); }

    explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

private:
    explicit Image(claim_image* raw) noexcept : handle_(raw) {}
    Handle<claim_image, claim_image_free> handle_;
};

// ---------------------------------------------------------------- SMILE

/// Number of voxels of `v` (dims product); throws claim::Error when it does
/// not fit size_t, before anything is allocated for it.
inline std::size_t voxel_count(const claim_volume& v) {
    std::size_t count = 1;
    for (int a = 0; a < 3; ++a) {
        const std::uint64_t d = v.dims[a];
        if (d != 0 && count > std::numeric_limits<std::size_t>::max() / d) {
            throw Error(CLAIM_ERR_INVALID_ARGUMENT, "claim::voxel_count: dims overflow size_t");
        }
        count *= static_cast<std::size_t>(d);
    }
    return count;
}

/// The default AHA options: EMIDEC labels without RV, rotation 0, long axis
/// estimated. Change fields (e.g. `labels.rv = 5`), then pass it on.
inline claim_aha_params default_aha_params() {
    claim_aha_params params{};
    CLAIM_DEFAULT(claim_aha_params, &params);
    return params;
}

/// Default bull's-eye options: 480 px, 0–100 % scale, numbers and
/// percentages, no title.
inline claim_bullseye_options default_bullseye_options() {
    claim_bullseye_options options{};
    CLAIM_DEFAULT(claim_bullseye_options, &options);
    return options;
}

/// claim_smile_params with chainable setters, starting from the defaults
/// (ischaemic, territory, burden and transmurality drawn at random, no
/// MVO, EMIDEC labels without RV):
///
///     const auto params = claim::SmileParams().territory(CLAIM_TERRITORY_LAD).burden(0.15);
///     claim::smile_generate(labels, params, seed, out);
class SmileParams {
public:
    SmileParams() { CLAIM_DEFAULT(claim_smile_params, &params_); }
    // Copies point at their own copies of the scheme and AHA options.
    SmileParams(const SmileParams& other)
        : params_(other.params_), labels_(other.labels_), aha_(other.aha_) {
        repoint(other);
    }
    SmileParams& operator=(const SmileParams& other) {
        params_ = other.params_;
        labels_ = other.labels_;
        aha_ = other.aha_;
        repoint(other);
        return *this;
    }

    SmileParams& pattern(claim_pattern value) { params_.pattern = value; return *this; }
    SmileParams& territory(claim_territory value) { params_.territory = value; return *this; }
    /// Lesion burden, fraction 0–1 of the myocardium.
    SmileParams& burden(double fraction) { params_.burden = fraction; return *this; }
    /// Draws the burden at random (the default).
    SmileParams& random_burden() { params_.burden = -1.0; return *this; }
    /// Transmurality, fraction 0–1 of the wall (ischaemic pattern).
    SmileParams& transmurality(double fraction) { params_.transmurality = fraction; return *this; }
    /// Draws the transmurality at random (the default).
    SmileParams& random_transmurality() { params_.transmurality = -1.0; return *this; }
    /// An MVO core (ischaemic pattern).
    SmileParams& mvo(bool on) { params_.mvo = on ? 1 : 0; return *this; }
    /// Label scheme of input and output (also used by the parcellation);
    /// copied into this object, which `params.labels` then points to.
    SmileParams& labels(const claim_label_scheme& scheme) {
        labels_ = scheme;
        params_.labels = &labels_;
        return *this;
    }
    /// Parcellation options (their `labels` member is ignored); copied.
    SmileParams& aha(const claim_aha_params& options) {
        aha_ = options;
        params_.aha = &aha_;
        return *this;
    }

    /// The C struct; its pointers point into this object.
    const claim_smile_params& c() const noexcept { return params_; }
    claim_smile_params& c() noexcept { return params_; }
    operator const claim_smile_params&() const noexcept { return params_; }

private:
    void repoint(const SmileParams& other) {
        if (other.params_.labels == &other.labels_) params_.labels = &labels_;
        if (other.params_.aha == &other.aha_) params_.aha = &aha_;
    }
    claim_smile_params params_{};
    claim_label_scheme labels_{};
    claim_aha_params aha_{};
};

/// Parcellates `labels` into AHA segments, written into the caller's
/// `out_segments` (dims of `labels`, any voxel type).
inline void aha_parcellate(const claim_volume& labels, const claim_aha_params& params,
                           claim_volume& out_segments) {
    check(claim_aha_parcellate(&labels, &params, &out_segments));
}

/// The AHA segments (0, 1..17) of `labels` as a new buffer, i fastest.
inline std::vector<std::uint8_t> aha_segments(const claim_volume& labels,
                                              const claim_aha_params& params = default_aha_params()) {
    std::vector<std::uint8_t> segments(voxel_count(labels));
    claim_volume out = labels;
    out.voxel_type = CLAIM_VOXEL_U8;
    out.data = segments.data();
    aha_parcellate(labels, params, out);
    return segments;
}

/// Draws one scar mask of `labels` into the caller's `out_labels` (dims of
/// `labels`, any voxel type holding the scheme's labels; may alias `labels`).
inline void smile_generate(const claim_volume& labels, const claim_smile_params& params,
                           std::uint64_t seed, claim_volume& out_labels) {
    check(claim_smile_generate(&labels, &params, seed, &out_labels));
}

/// Draws one scar mask of `labels` as a new buffer of `T`, i fastest.
template <typename T>
std::vector<T> smile_generate(const claim_volume& labels, const claim_smile_params& params,
                              std::uint64_t seed) {
    std::vector<T> voxels(voxel_count(labels));
    claim_volume out = labels;
    out.voxel_type = voxel_type_of<T>();
    out.data = voxels.data();
    smile_generate(labels, params, seed, out);
    return voxels;
}

/// Per-AHA-segment myocardium, scar and MVO of `labels` (scheme in
/// `*params.labels`) over `segments`, or, with `segments` nullptr, over a
/// parcellation with `params`.
inline claim_aha_segment_stats aha_segment_stats_measure(
    const claim_volume& labels, const claim_volume* segments,
    const claim_aha_params& params = default_aha_params()) {
    claim_aha_segment_stats stats{};
    stats.struct_size = sizeof(claim_aha_segment_stats);
    check(claim_aha_segment_stats_measure(&labels, segments, &params, &stats));
    return stats;
}

/// The bull's-eye plot of `stats` as an SVG document.
inline std::string bullseye_render_svg(
    const claim_aha_segment_stats& stats,
    const claim_bullseye_options& options = default_bullseye_options()) {
    std::size_t needed = 0;
    check(claim_bullseye_render_svg(&stats, &options, nullptr, 0, &needed));
    std::string svg(needed, '\0');
    check(claim_bullseye_render_svg(&stats, &options, &svg[0], svg.size(), &needed));
    svg.resize(needed - 1);  // drop the NUL
    return svg;
}

/// The bull's-eye plot of `stats` as the bytes of a PNG file.
inline std::vector<std::uint8_t> bullseye_render_png(
    const claim_aha_segment_stats& stats, const claim_bullseye_options& options = default_bullseye_options()) {
    std::size_t needed = 0;
    check(claim_bullseye_render_png(&stats, &options, nullptr, 0, &needed));
    std::vector<std::uint8_t> png(needed);
    check(claim_bullseye_render_png(&stats, &options, png.data(), png.size(), &needed));
    return png;
}

/// The metrics of `claim eval` comparing `prediction` with `reference`
/// (Dice, HD95, volumes, scar burden, per AHA segment) as a JSON object;
/// `params` nullptr for EMIDEC labels without rotation.
inline std::string labels_evaluate_json(const claim_volume& prediction, const claim_volume& reference,
                                        const claim_aha_params* params = nullptr) {
    std::size_t needed = 0;
    check(claim_labels_evaluate_json(&prediction, &reference, params, nullptr, 0, &needed));
    std::string json(needed, '\0');
    check(claim_labels_evaluate_json(&prediction, &reference, params, &json[0], json.size(), &needed));
    json.resize(needed - 1);  // drop the NUL
    return json;
}

/// One heart prepared for many scar draws (parcellated once). Move-only;
/// draws may run on several threads at once.
class SmileContext {
public:
    SmileContext() noexcept = default;

    /// Prepares draws for `labels` (copied); `segments` nullptr parcellates
    /// with `params.aha`, else its AHA segments are used.
    static SmileContext create(const claim_volume& labels, const claim_smile_params& params,
                               const claim_volume* segments = nullptr) {
        claim_smile_context* raw = nullptr;
        check(claim_smile_context_create(&labels, segments, &params, &raw));
        return SmileContext(raw);
    }

    /// Draws the mask of `seed` into `out_labels`; returns what was drawn.
    claim_smile_info draw(std::uint64_t seed, claim_volume& out_labels) const {
        claim_smile_info info{};
        info.struct_size = sizeof(claim_smile_info);
        check(claim_smile_context_draw(handle_.get(), seed, &out_labels, &info));
        return info;
    }

    const claim_smile_context* get() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

private:
    explicit SmileContext(claim_smile_context* raw) noexcept : handle_(raw) {}
    Handle<claim_smile_context, claim_smile_context_free> handle_;
};

// ---- Diffusion model and scar synthesis ----

/// claim_load_options with the defaults (CPU, device 0, automatic precision).
inline claim_load_options default_load_options() {
    claim_load_options options{};
    CLAIM_DEFAULT(claim_load_options, &options);
    return options;
}

/// A claim_tensor viewing `data` (caller-owned), row-major in PyTorch order.
inline claim_tensor make_tensor(float* data, const std::vector<std::uint64_t>& shape) {
    claim_tensor t{};
    t.struct_size = sizeof(claim_tensor);
    t.dtype = CLAIM_TENSOR_F32;
    if (shape.size() > CLAIM_TENSOR_MAX_DIMS) throw Error(CLAIM_ERR_INVALID_ARGUMENT, "tensor rank > 8");
    t.ndim = static_cast<std::uint32_t>(shape.size());
    for (std::size_t d = 0; d < shape.size(); ++d) t.shape[d] = shape[d];
    t.data = data;
    return t;
}

/// A loaded LeFusion/CLAIM denoiser. Move-only; one model may serve several
/// threads at once.
class DiffusionModel {
public:
    DiffusionModel() noexcept = default;

    /// Loads a .safetensors checkpoint (see claim_diffusion_load).
    static DiffusionModel load(const std::string& path,
                               const claim_load_options& options = default_load_options()) {
        claim_diffusion_model* raw = nullptr;
        check(claim_diffusion_load(path.c_str(), &options, &raw));
        return DiffusionModel(raw);
    }

    /// Channels, condition length, widths, the H/W multiple, default frames
    /// and the number of 16-bin histograms the condition takes.
    claim_diffusion_info info() const {
        claim_diffusion_info info{};
        info.struct_size = sizeof(claim_diffusion_info);
        check(claim_diffusion_info_get(handle_.get(), &info));
        return info;
    }

    /// One network evaluation: ε̂ for x `[B, C, F, H, W]` at `timesteps` (B
    /// values); `cond` nullptr = the learned null condition.
    std::vector<float> predict_noise(std::vector<float> x, const std::vector<std::uint64_t>& shape,
                                     const std::vector<std::int64_t>& timesteps,
                                     std::vector<float>* cond = nullptr) const {
        claim_tensor xt = make_tensor(x.data(), shape);
        std::vector<float> out(x.size());
        claim_tensor ot = make_tensor(out.data(), shape);
        claim_tensor ct{};
        if (cond != nullptr) {
            const std::uint64_t batch = shape.empty() ? 0 : shape[0];
            const std::uint64_t per = batch == 0 ? 0 : cond->size() / batch;
            ct = make_tensor(cond->data(), {batch, per});
        }
        if (!shape.empty() && timesteps.size() != shape[0])
            throw Error(CLAIM_ERR_INVALID_ARGUMENT, "predict_noise: one timestep per batch item");
        check(claim_diffusion_predict_noise(handle_.get(), &xt, timesteps.data(),
                                            cond != nullptr ? &ct : nullptr, &ot));
        return out;
    }

    const claim_diffusion_model* get() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

private:
    explicit DiffusionModel(claim_diffusion_model* raw) noexcept : handle_(raw) {}
    Handle<claim_diffusion_model, claim_diffusion_free> handle_;
};

/// claim_synthesis_params with chainable setters, starting from the
/// defaults (300/5/5, seed 0, the layout's preset histograms, lesion-only
/// paste, the model's frames and channel map):
///
///     auto params = claim::SynthesisParams().seed(7).jumps(100, 2, 2);
class SynthesisParams {
public:
    SynthesisParams() { CLAIM_DEFAULT(claim_synthesis_params, &params_); }
    // Copies point at their own copy of the scheme.
    SynthesisParams(const SynthesisParams& other) : params_(other.params_), labels_(other.labels_) {
        if (other.params_.labels == &other.labels_) params_.labels = &labels_;
    }
    SynthesisParams& operator=(const SynthesisParams& other) {
        params_ = other.params_;
        labels_ = other.labels_;
        if (other.params_.labels == &other.labels_) params_.labels = &labels_;
        return *this;
    }

    SynthesisParams& seed(std::uint64_t value) { params_.seed = value; return *this; }
    /// RePaint's t_T, jump length and jump count.
    SynthesisParams& jumps(std::uint32_t t_start, std::uint32_t length, std::uint32_t n_sample) {
        params_.t_start = t_start;
        params_.jump_length = length;
        params_.jump_n_sample = n_sample;
        return *this;
    }
    SynthesisParams& guidance(double scale) { params_.guidance_scale = scale; return *this; }
    /// An explicit histogram: the model's whole condition, 16 values per
    /// channel in channel order (16 for CLAIM, 32 for LeFusion-EMIDEC).
    SynthesisParams& histogram(const std::vector<float>& values) {
        if (values.size() > CLAIM_HISTOGRAM_MAX) throw Error(CLAIM_ERR_INVALID_ARGUMENT, "histogram > 32 values");
        params_.histogram_source = CLAIM_HISTOGRAM_VALUES;
        params_.histogram_length = static_cast<std::uint32_t>(values.size());
        for (std::size_t b = 0; b < values.size(); ++b) params_.histogram[b] = values[b];
        return *this;
    }
    SynthesisParams& perturb_histogram(bool on) { params_.perturb_histogram = on ? 1 : 0; return *this; }
    SynthesisParams& keep_network_output(bool on) { params_.keep_network_output = on ? 1 : 0; return *this; }
    SynthesisParams& batch_size(std::uint32_t value) { params_.batch_size = value; return *this; }
    SynthesisParams& crop_size(std::uint32_t value) { params_.crop_size = value; return *this; }
    /// Frames per item; 0 = the model's layout (10 for two channels, else 1).
    SynthesisParams& frames(std::uint32_t value) { params_.frames = value; return *this; }
    /// The label each model channel paints (scar or MVO), in channel order;
    /// empty = the layout's default (scar; scar, MVO).
    SynthesisParams& channel_labels(const std::vector<std::int32_t>& labels) {
        if (labels.size() > CLAIM_MAX_CHANNELS) throw Error(CLAIM_ERR_INVALID_ARGUMENT, "more than 8 channels");
        params_.channel_count = static_cast<std::uint32_t>(labels.size());
        for (std::size_t c = 0; c < labels.size(); ++c) params_.channel_labels[c] = labels[c];
        return *this;
    }
    /// Label scheme of the label map; copied into this object.
    SynthesisParams& labels(const claim_label_scheme& scheme) {
        labels_ = scheme;
        params_.labels = &labels_;
        return *this;
    }

    /// The C struct; its `labels` points into this object.
    const claim_synthesis_params& c() const noexcept { return params_; }
    claim_synthesis_params& c() noexcept { return params_; }
    operator const claim_synthesis_params&() const noexcept { return params_; }

private:
    claim_synthesis_params params_{};
    claim_label_scheme labels_{};
};

/// Progress of diffusion_synthesize() and segmenter_segment(): (done,
/// total) network evaluations; return false to cancel (the call then
/// throws claim::Error with CLAIM_ERR_CANCELLED). An exception thrown by
/// the callback cancels the call and is rethrown.
using Progress = std::function<bool(std::uint64_t done, std::uint64_t total)>;

/// Synthesizes scar into `out_image` (dims of `image`, its voxel type or
/// float; may alias `image`) inside the scar/MVO labels of `labels`.
inline void diffusion_synthesize(const DiffusionModel& model, const claim_volume& image,
                       const claim_volume& labels, const claim_synthesis_params& params,
                       claim_volume& out_image, const Progress& progress = Progress()) {
    struct Context {
        const Progress* progress;
        std::exception_ptr error;
    } context{&progress, nullptr};
    auto trampoline = [](void* user, std::uint64_t done, std::uint64_t total) -> std::int32_t {
        auto* ctx = static_cast<Context*>(user);
        try {
            return (*ctx->progress)(done, total) ? 0 : 1;
        } catch (...) {
            ctx->error = std::current_exception();
            return 1;
        }
    };
    const claim_status status =
        claim_diffusion_synthesize(model.get(), &image, &labels, &params,
                         progress ? static_cast<claim_progress_fn>(trampoline) : nullptr, &context,
                         &out_image);
    if (context.error) std::rethrow_exception(context.error);
    check(status);
}

/// The normalised 16-bin scar histogram of a reference case (see
/// claim_histogram_measure), for SynthesisParams::histogram().
inline std::vector<float> histogram_measure(const claim_volume& image, const claim_volume& labels,
                                            const claim_label_scheme& scheme = default_label_scheme(),
                                            std::uint32_t crop_size = 72) {
    std::vector<float> histogram(CLAIM_HISTOGRAM_BINS);
    check(claim_histogram_measure(&image, &labels, &scheme, crop_size, histogram.data()));
    return histogram;
}

/// The whole condition of `model` measured from a reference case, one
/// 16-bin histogram per channel (see claim_histogram_measure_channels),
/// for SynthesisParams::histogram().
inline std::vector<float> histogram_measure_channels(const DiffusionModel& model,
                                                     const claim_volume& image,
                                                     const claim_volume& labels,
                                                     const claim_synthesis_params& params) {
    std::vector<float> histogram(CLAIM_HISTOGRAM_BINS * CLAIM_MAX_CHANNELS);
    std::uint32_t length = 0;
    check(claim_histogram_measure_channels(model.get(), &image, &labels, &params, histogram.data(),
                                           static_cast<std::uint32_t>(histogram.size()), &length));
    histogram.resize(length);
    return histogram;
}

// ---- nnU-Net segmentation ----

/// claim_segmenter_options with chainable setters, starting from the
/// defaults (every numbered fold, the checkpoints' configuration):
///
///     const auto model = claim::Segmenter::load(folder, claim::SegmenterOptions().folds({0, 1}));
class SegmenterOptions {
public:
    SegmenterOptions() { CLAIM_DEFAULT(claim_segmenter_options, &options_); }

    /// Folds to ensemble (CLAIM_FOLD_ALL for fold_all); empty = every
    /// numbered fold. The first is the one predict_logits() evaluates.
    SegmenterOptions& folds(const std::vector<std::int32_t>& folds) {
        if (folds.size() > CLAIM_SEGMENTER_MAX_FOLDS)
            throw Error(CLAIM_ERR_INVALID_ARGUMENT, "claim::SegmenterOptions::folds: more than 16 folds");
        options_.fold_count = static_cast<std::uint32_t>(folds.size());
        for (std::size_t k = 0; k < folds.size(); ++k) options_.folds[k] = folds[k];
        return *this;
    }
    /// Plans configuration (e.g. "2d"); "" = the checkpoints' own.
    SegmenterOptions& configuration(const std::string& name) {
        if (name.size() >= CLAIM_SEGMENTER_NAME_MAX || name.find('\0') != std::string::npos)
            throw Error(CLAIM_ERR_INVALID_ARGUMENT,
                        "claim::SegmenterOptions::configuration: a name of at most 63 bytes without NUL");
        std::fill(std::begin(options_.configuration), std::end(options_.configuration), '\0');
        name.copy(options_.configuration, name.size());
        return *this;
    }

    const claim_segmenter_options& c() const noexcept { return options_; }
    claim_segmenter_options& c() noexcept { return options_; }
    operator const claim_segmenter_options&() const noexcept { return options_; }

private:
    claim_segmenter_options options_{};
};

/// A loaded nnU-Net model (results folder, checkpoint or safetensors
/// bundle). Move-only; one segmenter may serve several threads at once.
class Segmenter {
public:
    Segmenter() noexcept = default;

    /// Loads `path` (see claim_segmenter_load).
    static Segmenter load(const std::string& path,
                          const claim_segmenter_options& options = SegmenterOptions(),
                          const claim_load_options& load_options = default_load_options()) {
        claim_segmenter* raw = nullptr;
        check(claim_segmenter_load(path.c_str(), &load_options, &options, &raw));
        return Segmenter(raw);
    }

    /// Dims, channels, classes, patch, spacing, folds and names.
    claim_segmenter_info info() const {
        claim_segmenter_info info{};
        info.struct_size = sizeof(claim_segmenter_info);
        check(claim_segmenter_info_get(handle_.get(), &info));
        return info;
    }

    /// Configuration name, e.g. "2d".
    std::string configuration() const { return info().configuration; }

    /// Raw logits of the first fold's network for x `[B, C, H, W]` (or
    /// `[B, C, D, H, W]`): `[B, classes, <spatial sizes of x>]`, row-major.
    std::vector<float> predict_logits(std::vector<float> x, const std::vector<std::uint64_t>& shape) const {
        if (shape.size() < 2) throw Error(CLAIM_ERR_INVALID_ARGUMENT, "predict_logits: shape needs [B, C, ...]");
        std::vector<std::uint64_t> out_shape = shape;
        out_shape[1] = info().num_classes;
        std::size_t count = 1;
        for (const std::uint64_t d : out_shape) {
            if (d != 0 && count > std::numeric_limits<std::size_t>::max() / d)
                throw Error(CLAIM_ERR_INVALID_ARGUMENT, "predict_logits: shape overflows size_t");
            count *= static_cast<std::size_t>(d);
        }
        const claim_tensor xt = make_tensor(x.data(), shape);
        std::vector<float> out(count);
        claim_tensor ot = make_tensor(out.data(), out_shape);
        check(claim_segmenter_predict_logits(handle_.get(), &xt, &ot));
        return out;
    }

    const claim_segmenter* get() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

private:
    explicit Segmenter(claim_segmenter* raw) noexcept : handle_(raw) {}
    Handle<claim_segmenter, claim_segmenter_free> handle_;
};

/// claim_segmentation_params with chainable setters, starting from the defaults
/// (mirroring, step 0.5, post-processing, EMIDEC labels).
class SegmentationParams {
public:
    SegmentationParams() { CLAIM_DEFAULT(claim_segmentation_params, &params_); }
    // Copies point at their own copy of the scheme.
    SegmentationParams(const SegmentationParams& other)
        : params_(other.params_), labels_(other.labels_) {
        if (other.params_.labels == &other.labels_) params_.labels = &labels_;
    }
    SegmentationParams& operator=(const SegmentationParams& other) {
        params_ = other.params_;
        labels_ = other.labels_;
        if (other.params_.labels == &other.labels_) params_.labels = &labels_;
        return *this;
    }

    SegmentationParams& mirroring(bool on) { params_.mirroring = on ? 1 : 0; return *this; }
    /// Sliding-window step, fraction of the patch in (0, 1].
    SegmentationParams& step_size(float fraction) { params_.step_size = fraction; return *this; }
    SegmentationParams& postprocess(bool on) { params_.postprocess = on ? 1 : 0; return *this; }
    /// Values written for the tissues; copied into this object.
    SegmentationParams& labels(const claim_label_scheme& scheme) {
        labels_ = scheme;
        params_.labels = &labels_;
        return *this;
    }

    /// The C struct; its `labels` points into this object.
    const claim_segmentation_params& c() const noexcept { return params_; }
    claim_segmentation_params& c() noexcept { return params_; }
    operator const claim_segmentation_params&() const noexcept { return params_; }

private:
    claim_segmentation_params params_{};
    claim_label_scheme labels_{};
};

/// Segments `image` into the caller's `out_labels` (dims of `image`, any
/// voxel type; may alias `image`). `progress` gets (done, total) network
/// evaluations; returning false cancels (claim::Error with
/// CLAIM_ERR_CANCELLED); an exception it throws cancels and is rethrown.
inline void segmenter_segment(const Segmenter& model, const claim_volume& image, const claim_segmentation_params& params,
                    claim_volume& out_labels, const Progress& progress = Progress()) {
    struct Context {
        const Progress* progress;
        std::exception_ptr error;
    } context{&progress, nullptr};
    auto trampoline = [](void* user, std::uint64_t done, std::uint64_t total) -> std::int32_t {
        auto* ctx = static_cast<Context*>(user);
        try {
            return (*ctx->progress)(done, total) ? 0 : 1;
        } catch (...) {
            ctx->error = std::current_exception();
            return 1;
        }
    };
    const claim_status status =
        claim_segmenter_segment(model.get(), &image, &params, progress ? static_cast<claim_progress_fn>(trampoline) : nullptr,
                      &context, &out_labels);
    if (context.error) std::rethrow_exception(context.error);
    check(status);
}

/// The label map of `image` as a new u8 buffer, i fastest (geometry: that
/// of `image`).
inline std::vector<std::uint8_t> segmenter_segment(const Segmenter& model, const claim_volume& image,
                                         const claim_segmentation_params& params = SegmentationParams(),
                                         const Progress& progress = Progress()) {
    std::vector<std::uint8_t> labels(voxel_count(image));
    claim_volume out = image;
    out.voxel_type = CLAIM_VOXEL_U8;
    out.data = labels.data();
    segmenter_segment(model, image, params, out, progress);
    return labels;
}

}  // namespace claim

#endif  // CLAIM_HPP
