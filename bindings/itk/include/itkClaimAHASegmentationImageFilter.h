// itkClaimAHASegmentationImageFilter.h: AHA 17-segment parcellation of the
// LV myocardium (claim_aha_parcellate) as an ITK filter.
#ifndef itkClaimAHASegmentationImageFilter_h
#define itkClaimAHASegmentationImageFilter_h

#include "itkClaimImageFilterBase.h"

#include "itkImage.h"
#include "itkVector.h"

#include <cstdint>
#include <limits>

namespace itk
{

/** \class ClaimAHASegmentationImageFilter
 * \brief Parcellates the LV myocardium of a label map into the 17 AHA
 * segments (Cerqueira et al., Circulation 2002) with claim_aha_parcellate.
 *
 * Input (SetInput): a 3-D label map, any scalar pixel type (float labels
 * must be integral), holding the LV cavity and myocardium labels and no
 * label the scheme does not name (scar and MVO count as myocardium; see
 * the label setters of ClaimImageFilterBase). With an RV label (SetRVLabel)
 * present, the septum and the RV insertion points come from the RV;
 * without one (-1, the default) the septum is approximated from the
 * patient orientation in the image's direction matrix. Give the RV for
 * clinical use.
 *
 * Output: the AHA segment map, TOutputImage (default uint8): 0 outside the
 * myocardium, 1-17 on every myocardium voxel (healthy, scar and MVO). Its
 * origin, spacing, direction and regions are the input's. The long axis,
 * levels and sectors are found in LPS world millimetres through that
 * geometry, so any orientation and slice thickness works.
 *
 * Parameters: RotationDegrees (turns the segments counter-clockwise as
 * seen from the apex, default 0); LongAxis (apex to base in LPS, any
 * length, e.g. the normal of a short-axis stack; all zero, the default,
 * estimates it from the shape).
 *
 * Buffers: see itkClaimImageBridge.h. The input is passed without a copy
 * when its pixel type is uint8, int16, uint16, int32 or float (otherwise it
 * is converted to int32 or float); the output buffer is written directly
 * when its pixel type is one of those (otherwise through a uint8 buffer).
 *
 * The call reports no intermediate progress (it takes milliseconds):
 * progress goes 0 then 1.
 */
template <typename TLabelImage, typename TOutputImage = Image<std::uint8_t, TLabelImage::ImageDimension>>
class ClaimAHASegmentationImageFilter : public ClaimImageFilterBase<TLabelImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ClaimAHASegmentationImageFilter);

  using Self = ClaimAHASegmentationImageFilter;
  using Superclass = ClaimImageFilterBase<TLabelImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  using LabelImageType = TLabelImage;
  using OutputImageType = TOutputImage;
  using OutputPixelType = typename TOutputImage::PixelType;
  using VectorType = Vector<double, 3>;

  static_assert(std::numeric_limits<OutputPixelType>::max() >= 17, "the output pixel type must hold segments 0-17");

  itkNewMacro(Self);
  itkTypeMacro(ClaimAHASegmentationImageFilter, ClaimImageFilterBase);

  /** Rotation of the angular origin in degrees, counter-clockwise as seen
   * from the apex (the bull's-eye view). Default 0. */
  itkSetMacro(RotationDegrees, double);
  itkGetConstMacro(RotationDegrees, double);

  /** Long-axis direction in LPS (apex to base, any length); all zero (the
   * default) estimates it from the label map. */
  itkSetMacro(LongAxis, VectorType);
  itkGetConstReferenceMacro(LongAxis, VectorType);

protected:
  ClaimAHASegmentationImageFilter()
  {
    const claim_aha_params defaults = claim::default_aha_params();
    m_RotationDegrees = defaults.rotation_deg;
    for (unsigned int a = 0; a < 3; ++a)
    {
      m_LongAxis[a] = defaults.long_axis[a];
    }
  }
  ~ClaimAHASegmentationImageFilter() override = default;

  void
  GenerateData() override
  {
    this->CheckLibraryVersion();
    this->AllocateOutputs();
    this->UpdateProgress(0.0f);

    const ClaimInputVolume<TLabelImage>                labels(this->GetInput());
    ClaimOutputVolume<TOutputImage, std::uint8_t>     segments(this->GetOutput(), true);
    const claim_label_scheme                           scheme = this->GetLabelScheme();
    claim_aha_params                                   params = claim::default_aha_params();
    params.labels = &scheme;
    params.rotation_deg = m_RotationDegrees;
    for (unsigned int a = 0; a < 3; ++a)
    {
      params.long_axis[a] = m_LongAxis[a];
    }
    try
    {
      claim::aha_parcellate(labels.Get(), params, segments.Get());
    }
    catch (const claim::Error & error)
    {
      this->ThrowClaimError(error, "claim_aha_parcellate");
    }
    segments.Commit();
    this->UpdateProgress(1.0f);
  }

  void
  PrintSelf(std::ostream & os, Indent indent) const override
  {
    Superclass::PrintSelf(os, indent);
    os << indent << "RotationDegrees: " << m_RotationDegrees << std::endl;
    os << indent << "LongAxis: " << m_LongAxis << std::endl;
  }

private:
  double     m_RotationDegrees{ 0.0 };
  VectorType m_LongAxis{ 0.0 };
};

} // end namespace itk

#endif // itkClaimAHASegmentationImageFilter_h
