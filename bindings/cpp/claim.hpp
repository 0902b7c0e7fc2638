// claim.hpp: header-only C++17 wrapper over the claim C API (claim.h).
//
// Failures become exceptions (claim::Error, carrying the claim_status and
// the library's message); library handles become move-only RAII types that
// free themselves. Everything here is a thin inline layer: the C API stays
// the contract, and each new C area (SMILE, synthesis, segmentation) gets a
// class or function here in the same shape: call the C function, pass its
// status to check(), wrap any returned handle in a Handle<...>.
#ifndef CLAIM_HPP
#define CLAIM_HPP

#include "claim.h"

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

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

/// The default (EMIDEC) label scheme: 1 LV cavity, 2 myocardium, 3 scar,
/// 4 MVO, no RV (rv = -1). Change fields, then pass it in parameter structs.
inline claim_label_scheme default_label_scheme() {
    claim_label_scheme scheme{};
    claim_label_scheme_default(&scheme);
    return scheme;
}

/// The CLAIM_DTYPE_* of a voxel type (uint8_t, int16_t, uint16_t, int32_t, float).
template <typename T>
constexpr claim_dtype dtype_of() {
    static_assert(std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int16_t> ||
                      std::is_same_v<T, std::uint16_t> || std::is_same_v<T, std::int32_t> ||
                      std::is_same_v<T, float>,
                  "claim volumes hold uint8_t, int16_t, uint16_t, int32_t or float");
    if constexpr (std::is_same_v<T, std::uint8_t>) return CLAIM_DTYPE_U8;
    else if constexpr (std::is_same_v<T, std::int16_t>) return CLAIM_DTYPE_I16;
    else if constexpr (std::is_same_v<T, std::uint16_t>) return CLAIM_DTYPE_U16;
    else if constexpr (std::is_same_v<T, std::int32_t>) return CLAIM_DTYPE_I32;
    else return CLAIM_DTYPE_F32;
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
inline claim_volume make_volume(claim_dtype dtype, const std::array<std::uint64_t, 3>& dims,
                                void* data, const Geometry& geometry = Geometry{}) {
    claim_volume v{};
    v.struct_size = sizeof(claim_volume);
    v.dtype = dtype;
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

    /// A zero-filled image of `dtype` with the dims and geometry of `like`
    /// (`like.data` is not read).
    static Image create(const claim_volume& like, claim_dtype dtype) {
        claim_image* raw = nullptr;
        check(claim_image_create(&like, dtype, &raw));
        return Image(raw);
    }

    /// A zero-filled image with the given dims and geometry.
    static Image create(claim_dtype dtype, const std::array<std::uint64_t, 3>& dims,
                        const Geometry& geometry = Geometry{}) {
        return create(make_volume(dtype, dims, nullptr, geometry), dtype);
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

    claim_dtype dtype() const { return view().dtype; }

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

    /// The voxels as `T`, i fastest; throws unless `T` matches the dtype.
    template <typename T>
    T* data() {
        const claim_volume v = view();
        if (v.dtype != dtype_of<T>()) {
            throw Error(CLAIM_ERR_INVALID_ARGUMENT,
                        std::string("claim::Image::data: the image holds dtype ") +
                            std::to_string(v.dtype) + ", not the requested " +
                            std::to_string(dtype_of<T>()));
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

}  // namespace claim

#endif  // CLAIM_HPP
