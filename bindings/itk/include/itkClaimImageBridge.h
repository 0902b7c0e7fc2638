// itkClaimImageBridge.h: how ITK images cross into the claim C API.
//
// Part of the header-only ITK filters over libclaim (see README.md beside
// this folder). Everything here is inline; link claim::claim and ITK.
//
// Geometry: a claim_volume carries the same geometry as an itk::Image, in
// the same frame (LPS millimetres, as ITK's physical space):
//   dims[a]       = LargestPossibleRegion size along axis a (i fastest),
//   spacing[a]    = GetSpacing()[a],
//   origin        = physical point of the region's first voxel, i.e.
//                   GetOrigin() for the usual region starting at index 0,
//   direction     = GetDirection(), row-major: direction[3 * r + c] is
//                   row r, column c (column c is voxel axis c in LPS).
// World position of voxel (i, j, k) is then origin + direction·diag(spacing)·(i, j, k)
// in both libraries, so nothing is flipped, permuted or rounded.
//
// Buffers: ITK's buffer order (i fastest, then j, then k) is claim's, so an
// image is passed without a copy when its pixel type is one of claim's
// voxel types (uint8_t, int16_t, uint16_t, int32_t, float) and its
// buffered region is its whole largest possible region. Otherwise the
// bridge converts into a temporary buffer: integer pixels to int32_t (a
// value outside int32_t's range throws), floating-point pixels to float.
#ifndef itkClaimImageBridge_h
#define itkClaimImageBridge_h

#include "claim.hpp"

#include "itkMacro.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionIterator.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace itk
{

/** \class ClaimExceptionObject
 * \brief A failed claim_* call inside a Claim filter.
 *
 * The description reads "<status name>: <library message>", the message
 * naming the C function, e.g. "CLAIM_ERR_IO: claim_diffusion_load: I/O
 * error: model.safetensors: No such file or directory", so a caller that only
 * catches itk::ExceptionObject still sees the claim status; GetStatus()
 * gives the code itself (a CLAIM_ERR_* value).
 */
class ClaimExceptionObject : public ExceptionObject
{
public:
  ClaimExceptionObject(const char * file,
                       unsigned int line,
                       claim_status status,
                       const std::string & call,
                       const std::string & message,
                       const std::string & location)
    : ExceptionObject(std::string(file), line, Describe(status, call, message), location)
    , m_Status(status)
  {}

  /** The CLAIM_ERR_* code of the failed call. */
  claim_status
  GetStatus() const noexcept
  {
    return m_Status;
  }

  /** The code's name, e.g. "CLAIM_ERR_IO" (claim_status_str). */
  const char *
  GetStatusName() const noexcept
  {
    return claim_status_str(m_Status);
  }

  const char *
  GetNameOfClass() const override
  {
    return "ClaimExceptionObject";
  }

private:
  // "<status name>: <message>", the message prefixed with the call unless
  // it names it already (claim's messages start with the function).
  static std::string
  Describe(claim_status status, const std::string & call, const std::string & message)
  {
    const bool named = message.compare(0, call.size(), call) == 0;
    return std::string(claim_status_str(status)) + ": " + (named ? message : call + ": " + message);
  }

  claim_status m_Status;
};

/** \class ClaimVoxelTraits
 * \brief Whether a scalar pixel type is a claim voxel type (IsNative), and
 * the type claim sees it as (StorageType): the type itself when native,
 * else int32_t for integers and float for floating point.
 */
template <typename TPixel>
struct ClaimVoxelTraits
{
  static_assert(std::is_arithmetic<TPixel>::value,
                "Claim filters take scalar images (claim volumes have one channel)");
  static constexpr bool IsNative = false;
  using StorageType = typename std::conditional<std::is_floating_point<TPixel>::value, float, std::int32_t>::type;
};

#define itkClaimNativeVoxelMacro(type)         \
  template <>                                   \
  struct ClaimVoxelTraits<type>                 \
  {                                             \
    static constexpr bool IsNative = true;      \
    using StorageType = type;                   \
  }
itkClaimNativeVoxelMacro(std::uint8_t);
itkClaimNativeVoxelMacro(std::int16_t);
itkClaimNativeVoxelMacro(std::uint16_t);
itkClaimNativeVoxelMacro(std::int32_t);
itkClaimNativeVoxelMacro(float);
#undef itkClaimNativeVoxelMacro

/** Fills dims, spacing, origin and direction of `volume` from `region` of
 * `image` (see the mapping at the top of this file). 3-D images only: the
 * C API works on volumes. */
template <typename TImage>
void
ClaimCopyGeometry(const TImage * image, const typename TImage::RegionType & region, claim_volume & volume)
{
  static_assert(TImage::ImageDimension == 3, "Claim filters work on 3-D images");
  typename TImage::PointType origin;
  image->TransformIndexToPhysicalPoint(region.GetIndex(), origin);
  const typename TImage::SpacingType &   spacing = image->GetSpacing();
  const typename TImage::DirectionType & direction = image->GetDirection();
  for (unsigned int a = 0; a < 3; ++a)
  {
    volume.dims[a] = static_cast<std::uint64_t>(region.GetSize()[a]);
    volume.spacing[a] = spacing[a];
    volume.origin[a] = origin[a];
  }
  for (unsigned int r = 0; r < 3; ++r)
  {
    for (unsigned int c = 0; c < 3; ++c)
    {
      volume.direction[3 * r + c] = direction(r, c);
    }
  }
}

/** \class ClaimInputVolume
 * \brief A claim_volume viewing the whole (largest possible region of an)
 * input image: its buffer itself when the pixel type is native and the
 * buffer holds exactly that region (IsZeroCopy()), else a converted copy
 * kept alive by this object. The image must outlive this object.
 */
template <typename TImage>
class ClaimInputVolume
{
public:
  using PixelType = typename TImage::PixelType;
  using Traits = ClaimVoxelTraits<PixelType>;
  using StorageType = typename Traits::StorageType;

  explicit ClaimInputVolume(const TImage * image)
  {
    if (image == nullptr)
    {
      itkGenericExceptionMacro(<< "ClaimInputVolume: no image");
    }
    const typename TImage::RegionType & whole = image->GetLargestPossibleRegion();
    const typename TImage::RegionType & buffered = image->GetBufferedRegion();
    if (!buffered.IsInside(whole) || image->GetBufferPointer() == nullptr)
    {
      itkGenericExceptionMacro(<< "ClaimInputVolume: the C API needs the whole image in memory; buffered region "
                               << buffered << " does not hold the largest possible region " << whole);
    }
    m_Volume.struct_size = sizeof(claim_volume);
    m_Volume.voxel_type = claim::voxel_type_of<StorageType>();
    ClaimCopyGeometry(image, whole, m_Volume);
    if constexpr (Traits::IsNative)
    {
      if (buffered == whole)
      {
        // claim only reads an input volume during the call.
        m_Volume.data = const_cast<PixelType *>(image->GetBufferPointer());
        return;
      }
    }
    // Conversion (non-native pixel type) or a buffer larger than the image.
    m_Copy.resize(whole.GetNumberOfPixels());
    std::size_t k = 0;
    for (ImageRegionConstIterator<TImage> it(image, whole); !it.IsAtEnd(); ++it, ++k)
    {
      m_Copy[k] = Convert(it.Get());
    }
    m_Volume.data = m_Copy.data();
  }

  ClaimInputVolume(const ClaimInputVolume &) = delete;
  ClaimInputVolume & operator=(const ClaimInputVolume &) = delete;

  const claim_volume &
  Get() const noexcept
  {
    return m_Volume;
  }

  /** True when claim reads the image's own buffer. */
  bool
  IsZeroCopy() const noexcept
  {
    return m_Copy.empty();
  }

private:
  static StorageType
  Convert(PixelType value)
  {
    if constexpr (std::is_integral<PixelType>::value && !std::is_same<PixelType, StorageType>::value)
    {
      using Wide = typename std::conditional<std::is_signed<PixelType>::value, long long, unsigned long long>::type;
      const Wide wide = static_cast<Wide>(value);
      if constexpr (std::is_signed<PixelType>::value)
      {
        if (wide < std::numeric_limits<std::int32_t>::min())
        {
          itkGenericExceptionMacro(<< "ClaimInputVolume: pixel value " << wide << " does not fit int32_t");
        }
      }
      if (wide > static_cast<Wide>(std::numeric_limits<std::int32_t>::max()))
      {
        itkGenericExceptionMacro(<< "ClaimInputVolume: pixel value " << wide << " does not fit int32_t");
      }
    }
    return static_cast<StorageType>(value);
  }

  claim_volume             m_Volume{};
  std::vector<StorageType> m_Copy;
};

/** \class ClaimOutputVolume
 * \brief A claim_volume for claim to write an output image into: the
 * image's own buffer when its pixel type is native and `allowNative` (the
 * filter's call accepts that voxel type), else a temporary buffer of
 * `TFallback` that Commit() converts into the image (integers rounded and
 * clamped to the pixel type). The image must be allocated over its largest
 * possible region and outlive this object.
 */
template <typename TImage, typename TFallback>
class ClaimOutputVolume
{
public:
  using PixelType = typename TImage::PixelType;
  using Traits = ClaimVoxelTraits<PixelType>;
  static_assert(ClaimVoxelTraits<TFallback>::IsNative, "the fallback must be a claim voxel type");

  ClaimOutputVolume(TImage * image, bool allowNative)
    : m_Image(image)
  {
    const typename TImage::RegionType & whole = image->GetLargestPossibleRegion();
    if (image->GetBufferedRegion() != whole || image->GetBufferPointer() == nullptr)
    {
      itkGenericExceptionMacro(<< "ClaimOutputVolume: the output must be allocated over its largest possible region "
                               << whole);
    }
    m_Volume.struct_size = sizeof(claim_volume);
    ClaimCopyGeometry(image, whole, m_Volume);
    if constexpr (Traits::IsNative)
    {
      if (allowNative)
      {
        m_Volume.voxel_type = claim::voxel_type_of<PixelType>();
        m_Volume.data = image->GetBufferPointer();
        return;
      }
    }
    m_Volume.voxel_type = claim::voxel_type_of<TFallback>();
    m_Copy.resize(whole.GetNumberOfPixels());
    m_Volume.data = m_Copy.data();
  }

  ClaimOutputVolume(const ClaimOutputVolume &) = delete;
  ClaimOutputVolume & operator=(const ClaimOutputVolume &) = delete;

  claim_volume &
  Get() noexcept
  {
    return m_Volume;
  }

  bool
  IsZeroCopy() const noexcept
  {
    return m_Copy.empty();
  }

  /** Copies a converted result into the image (nothing when zero-copy). */
  void
  Commit()
  {
    if (m_Copy.empty())
    {
      return;
    }
    std::size_t k = 0;
    for (ImageRegionIterator<TImage> it(m_Image, m_Image->GetLargestPossibleRegion()); !it.IsAtEnd(); ++it, ++k)
    {
      it.Set(Convert(m_Copy[k]));
    }
  }

private:
  static PixelType
  Convert(TFallback value)
  {
    if constexpr (std::is_integral<PixelType>::value)
    {
      // Rounded to nearest and clamped to the pixel type (NaN becomes 0).
      const double rounded = std::round(static_cast<double>(value));
      if (std::isnan(rounded))
      {
        return PixelType{};
      }
      if (rounded <= static_cast<double>(std::numeric_limits<PixelType>::lowest()))
      {
        return std::numeric_limits<PixelType>::lowest();
      }
      if (rounded >= static_cast<double>(std::numeric_limits<PixelType>::max()))
      {
        return std::numeric_limits<PixelType>::max();
      }
      return static_cast<PixelType>(rounded);
    }
    else
    {
      return static_cast<PixelType>(value);
    }
  }

  TImage *               m_Image;
  claim_volume           m_Volume{};
  std::vector<TFallback> m_Copy;
};

} // end namespace itk

#endif // itkClaimImageBridge_h
