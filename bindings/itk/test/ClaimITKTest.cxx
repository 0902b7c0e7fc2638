// ClaimITKTest: checks the Claim ITK filters against the claim CLI.
//
//   ClaimITKTest prepare ATLAS_DIR PHANTOM_DIR WORK
//     reads the AHA atlas (AHA17_model_ED.nii.gz: 1-17 segments, 21 LV,
//     24 RV) and the phantom's labels through ITK's NIfTI IO and writes the
//     parcellation inputs: WORK/atlas_labels.nii.gz (segments -> 2 myocardium,
//     21 -> 1 LV, 24 -> 5 RV) and WORK/phantom_labels_norv.nii.gz (RV
//     removed).
//   ClaimITKTest check PHANTOM_DIR WORK
//     runs the filters and compares them with the CLI's outputs, which
//     run.sh writes between the two steps:
//       WORK/ref_atlas_rv.nii.gz          claim aha --rv 5 atlas_labels
//       WORK/ref_phantom_norv.nii.gz      claim aha phantom_labels_norv
//       WORK/ref_phantom_rv_rot30.nii.gz  claim aha --rv 5 --rotation 30 PHANTOM/labels
//       WORK/ref_segment.nii.gz           claim segment --model builtin --labels emidec-rv
//
// Exits 0 when every check passed, 1 otherwise (2 for bad usage).
#include "itkClaimAHASegmentationImageFilter.h"
#include "itkClaimScarSegmentationImageFilter.h"
#include "itkClaimScarSynthesisImageFilter.h"

#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionIterator.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace
{

int checks = 0;
int failures = 0;

void
Expect(bool ok, const std::string & what)
{
  ++checks;
  if (ok)
  {
    std::cout << "ok   " << what << "\n";
  }
  else
  {
    ++failures;
    std::cout << "FAIL " << what << "\n";
  }
}

using ShortImage = itk::Image<std::int16_t, 3>;
using UCharImage = itk::Image<std::uint8_t, 3>;
using FloatImage = itk::Image<float, 3>;
using DoubleImage = itk::Image<double, 3>;
using LongImage = itk::Image<long, 3>;

template <typename TImage>
typename TImage::Pointer
Read(const std::string & path)
{
  auto reader = itk::ImageFileReader<TImage>::New();
  reader->SetFileName(path);
  reader->Update();
  typename TImage::Pointer image = reader->GetOutput();
  image->DisconnectPipeline();
  return image;
}

template <typename TImage>
void
Write(const TImage * image, const std::string & path)
{
  auto writer = itk::ImageFileWriter<TImage>::New();
  writer->SetFileName(path);
  writer->SetInput(image);
  writer->Update();
}

/** A new image with `image`'s regions and geometry and its pixels mapped by `f`. */
template <typename TOut, typename TIn, typename F>
typename TOut::Pointer
Map(const TIn * image, F f)
{
  auto out = TOut::New();
  out->CopyInformation(image);
  out->SetRegions(image->GetLargestPossibleRegion());
  out->Allocate();
  itk::ImageRegionConstIterator<TIn> in(image, image->GetLargestPossibleRegion());
  itk::ImageRegionIterator<TOut>     o(out, out->GetLargestPossibleRegion());
  for (; !in.IsAtEnd(); ++in, ++o)
  {
    o.Set(static_cast<typename TOut::PixelType>(f(in.Get())));
  }
  return out;
}

template <typename TOut, typename TIn>
typename TOut::Pointer
Cast(const TIn * image)
{
  return Map<TOut>(image, [](typename TIn::PixelType v) { return v; });
}

/** Largest absolute difference of origin, spacing and direction entries;
 * infinity when the regions differ. */
template <typename A, typename B>
double
GeometryDifference(const A * a, const B * b)
{
  if (a->GetLargestPossibleRegion() != b->GetLargestPossibleRegion())
  {
    return INFINITY;
  }
  double worst = 0.0;
  for (unsigned int r = 0; r < 3; ++r)
  {
    worst = std::max(worst, std::fabs(a->GetOrigin()[r] - b->GetOrigin()[r]));
    worst = std::max(worst, std::fabs(a->GetSpacing()[r] - b->GetSpacing()[r]));
    for (unsigned int c = 0; c < 3; ++c)
    {
      worst = std::max(worst, std::fabs(a->GetDirection()(r, c) - b->GetDirection()(r, c)));
    }
  }
  return worst;
}

/** Exactly the same regions, origin, spacing and direction. */
template <typename A, typename B>
bool
SameGeometry(const A * a, const B * b)
{
  return GeometryDifference(a, b) == 0.0;
}

/** Voxels whose values differ (as double); every voxel when the sizes differ. */
template <typename A, typename B>
std::size_t
CountDifferent(const A * a, const B * b)
{
  if (a->GetLargestPossibleRegion().GetSize() != b->GetLargestPossibleRegion().GetSize())
  {
    return a->GetLargestPossibleRegion().GetNumberOfPixels();
  }
  itk::ImageRegionConstIterator<A> ia(a, a->GetLargestPossibleRegion());
  itk::ImageRegionConstIterator<B> ib(b, b->GetLargestPossibleRegion());
  std::size_t                      different = 0;
  for (; !ia.IsAtEnd(); ++ia, ++ib)
  {
    different += static_cast<double>(ia.Get()) != static_cast<double>(ib.Get()) ? 1u : 0u;
  }
  return different;
}

/** Records every ProgressEvent of a filter. */
struct ProgressLog
{
  std::vector<float> values;

  void
  Attach(itk::ProcessObject * filter)
  {
    filter->AddObserver(itk::ProgressEvent(), [this, filter](const itk::EventObject &) {
      values.push_back(filter->GetProgress());
    });
  }

  /** At least two reports, one strictly inside (0, 1) when `intermediate`,
   * never decreasing, the last 1. */
  bool
  Good(bool intermediate) const
  {
    bool inside = false;
    for (std::size_t k = 0; k < values.size(); ++k)
    {
      inside = inside || (values[k] > 0.0f && values[k] < 1.0f);
      if (k > 0 && values[k] < values[k - 1])
      {
        return false;
      }
    }
    return values.size() >= 2 && values.back() == 1.0f && (inside || !intermediate);
  }

  std::string
  Describe() const
  {
    std::ostringstream s;
    s << values.size() << " reports";
    if (!values.empty())
    {
      s << ", last " << values.back();
    }
    return s.str();
  }
};

/** Update() of `filter` aborted through a progress observer: true when it
 * threw itk::ProcessAborted after at least one report. */
bool
AbortsThroughProgress(itk::ProcessObject * filter, std::string & detail)
{
  int        reports = 0;
  const auto tag = filter->AddObserver(itk::ProgressEvent(), [filter, &reports](const itk::EventObject &) {
    const float p = filter->GetProgress();
    if (p > 0.0f && p < 1.0f)
    {
      ++reports;
      filter->AbortGenerateDataOn();
    }
  });
  bool aborted = false;
  filter->Modified();
  try
  {
    filter->Update();
    detail = "Update() returned normally";
  }
  catch (const itk::ProcessAborted & e)
  {
    aborted = true;
    detail = e.GetDescription();
  }
  catch (const itk::ExceptionObject & e)
  {
    detail = std::string("other exception: ") + e.GetDescription();
  }
  filter->RemoveObserver(tag);
  detail += " (" + std::to_string(reports) + " report(s) inside (0, 1))";
  return aborted && reports == 1;
}

/** Update() throws an itk::ExceptionObject whose description names a
 * claim status (`status`, e.g. "CLAIM_ERR_IO"). */
bool
ThrowsClaimStatus(itk::ProcessObject * filter, const std::string & status, std::string & detail)
{
  try
  {
    filter->Update();
    detail = "no exception";
    return false;
  }
  catch (const itk::ExceptionObject & e)
  {
    detail = e.GetDescription();
    const auto * claimError = dynamic_cast<const itk::ClaimExceptionObject *>(&e);
    return detail.find(status) != std::string::npos && claimError != nullptr &&
           std::string(claimError->GetStatusName()) == status;
  }
}

/** Every voxel with a myocardium-class label (2, 3, 4) has a segment
 * 1-17, every other voxel 0. */
template <typename TLabels, typename TSegments>
bool
CoversMyocardium(const TLabels * labels, const TSegments * segments)
{
  itk::ImageRegionConstIterator<TLabels>   l(labels, labels->GetLargestPossibleRegion());
  itk::ImageRegionConstIterator<TSegments> s(segments, segments->GetLargestPossibleRegion());
  for (; !l.IsAtEnd(); ++l, ++s)
  {
    const double label = static_cast<double>(l.Get());
    const double segment = static_cast<double>(s.Get());
    const bool   myocardium = label == 2 || label == 3 || label == 4;
    if (myocardium ? (segment < 1 || segment > 17) : segment != 0)
    {
      return false;
    }
  }
  return true;
}

double
Seconds(std::chrono::steady_clock::time_point since)
{
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// ------------------------------------------------------------------ prepare

int
Prepare(const std::string & atlasDir, const std::string & phantomDir, const std::string & work)
{
  const ShortImage::Pointer atlas = Read<ShortImage>(atlasDir + "/AHA17_model_ED.nii.gz");
  const auto                input = Map<ShortImage>(atlas.GetPointer(), [](std::int16_t v) -> std::int16_t {
    if (v >= 1 && v <= 17)
      return 2;
    if (v == 21)
      return 1;
    if (v == 24)
      return 5;
    return 0;
  });
  Write(input.GetPointer(), work + "/atlas_labels.nii.gz");

  const UCharImage::Pointer phantom = Read<UCharImage>(phantomDir + "/labels.nii.gz");
  const auto                norv =
    Map<UCharImage>(phantom.GetPointer(), [](std::uint8_t v) -> std::uint8_t { return v == 5 ? 0 : v; });
  Write(norv.GetPointer(), work + "/phantom_labels_norv.nii.gz");
  std::cout << "wrote " << work << "/atlas_labels.nii.gz and " << work << "/phantom_labels_norv.nii.gz\n";
  return 0;
}

// ------------------------------------------------------------------ checks

void
CheckGeometryMapping(const FloatImage * image)
{
  const itk::ClaimInputVolume<FloatImage> view(image);
  const claim_volume &                    v = view.Get();
  Expect(view.IsZeroCopy() && v.data == image->GetBufferPointer() && v.voxel_type == CLAIM_VOXEL_F32,
         "float image passed to claim without a copy");
  bool same = true;
  for (unsigned int a = 0; a < 3; ++a)
  {
    same = same && v.dims[a] == image->GetLargestPossibleRegion().GetSize()[a] &&
           v.spacing[a] == image->GetSpacing()[a] && v.origin[a] == image->GetOrigin()[a];
    for (unsigned int c = 0; c < 3; ++c)
    {
      same = same && v.direction[3 * a + c] == image->GetDirection()(a, c);
    }
  }
  Expect(same, "claim_volume dims/spacing/origin/direction are ITK's (direction row-major)");

  // claim's world position of a voxel, origin + direction·diag(spacing)·index,
  // is ITK's TransformIndexToPhysicalPoint.
  const FloatImage::IndexType index = { { 5, 7, 3 } };
  FloatImage::PointType       itkPoint;
  image->TransformIndexToPhysicalPoint(index, itkPoint);
  double worst = 0.0;
  for (unsigned int r = 0; r < 3; ++r)
  {
    double p = v.origin[r];
    for (unsigned int c = 0; c < 3; ++c)
    {
      p += v.direction[3 * r + c] * v.spacing[c] * static_cast<double>(index[c]);
    }
    worst = std::max(worst, std::fabs(p - itkPoint[r]));
  }
  Expect(worst < 1e-9, "claim's voxel-to-LPS formula gives ITK's physical point (oblique phantom)");

  const auto                               asDouble = Cast<DoubleImage>(image);
  const itk::ClaimInputVolume<DoubleImage> converted(asDouble.GetPointer());
  Expect(!converted.IsZeroCopy() && converted.Get().voxel_type == CLAIM_VOXEL_F32,
         "double image converted to a float buffer");
  const auto                             asLong = Cast<LongImage>(image);
  const itk::ClaimInputVolume<LongImage> convertedLong(asLong.GetPointer());
  Expect(!convertedLong.IsZeroCopy() && convertedLong.Get().voxel_type == CLAIM_VOXEL_I32,
         "long image converted to an int32 buffer");
}

template <typename TLabels, typename TOutput = UCharImage>
typename TOutput::Pointer
Parcellate(const TLabels * labels, std::int32_t rv, double rotation, ProgressLog * log = nullptr)
{
  using Filter = itk::ClaimAHASegmentationImageFilter<TLabels, TOutput>;
  auto filter = Filter::New();
  filter->SetInput(labels);
  filter->SetRVLabel(rv);
  filter->SetRotationDegrees(rotation);
  if (log != nullptr)
  {
    log->Attach(filter);
  }
  filter->Update();
  typename TOutput::Pointer out = filter->GetOutput();
  out->DisconnectPipeline();
  return out;
}

void
CheckAHA(const std::string & phantomDir, const std::string & work)
{
  // The atlas, with its RV, against `claim aha --rv 5`.
  {
    const auto     labels = Read<ShortImage>(work + "/atlas_labels.nii.gz");
    const auto     reference = Read<UCharImage>(work + "/ref_atlas_rv.nii.gz");
    ProgressLog    log;
    const auto     start = std::chrono::steady_clock::now();
    const auto     segments = Parcellate(labels.GetPointer(), 5, 0.0, &log);
    const double   seconds = Seconds(start);
    const std::size_t different = CountDifferent(segments.GetPointer(), reference.GetPointer());
    Expect(different == 0, "AHA filter on the atlas (int16, RV) equals `claim aha --rv 5` voxel for voxel (" +
                             std::to_string(different) + " differ, " + std::to_string(seconds) + " s)");
    Expect(SameGeometry(segments.GetPointer(), labels.GetPointer()), "AHA output keeps the input's geometry exactly");
    const double geometry = GeometryDifference(segments.GetPointer(), reference.GetPointer());
    Expect(geometry < 1e-5, "AHA output geometry matches the CLI's file (max difference " +
                              std::to_string(geometry) + ")");
    Expect(CoversMyocardium(labels.GetPointer(), segments.GetPointer()), "AHA segments cover exactly the myocardium");
    Expect(log.Good(false), "AHA progress reported, ending at 1 (" + log.Describe() + ")");
  }

  const auto phantom = Read<UCharImage>(phantomDir + "/labels.nii.gz");

  // The oblique phantom without RV: the septum then comes from the
  // direction matrix, so a wrongly mapped direction changes the segments.
  {
    const auto labels = Read<UCharImage>(work + "/phantom_labels_norv.nii.gz");
    const auto reference = Read<UCharImage>(work + "/ref_phantom_norv.nii.gz");
    const auto segments = Parcellate(labels.GetPointer(), -1, 0.0);
    const std::size_t different = CountDifferent(segments.GetPointer(), reference.GetPointer());
    Expect(different == 0, "AHA filter on the oblique phantom without RV equals `claim aha` (" +
                             std::to_string(different) + " differ)");
    Expect(SameGeometry(segments.GetPointer(), labels.GetPointer()), "AHA output keeps the oblique geometry");

    // The same voxels behind a region that starts at index (2, 3, 4), the
    // origin moved so that every voxel keeps its physical position.
    const auto shifted = Cast<UCharImage>(labels.GetPointer());
    UCharImage::RegionType region = labels->GetLargestPossibleRegion();
    const UCharImage::IndexType start = { { 2, 3, 4 } };
    UCharImage::PointType       origin;
    itk::ContinuousIndex<double, 3> back;
    for (unsigned int a = 0; a < 3; ++a)
    {
      back[a] = -static_cast<double>(start[a]);
    }
    labels->TransformContinuousIndexToPhysicalPoint(back, origin);
    region.SetIndex(start);
    shifted->SetRegions(region);
    shifted->SetOrigin(origin);
    const auto shiftedSegments = Parcellate(shifted.GetPointer(), -1, 0.0);
    Expect(shiftedSegments->GetLargestPossibleRegion() == region &&
             CountDifferent(shiftedSegments.GetPointer(), reference.GetPointer()) == 0,
           "AHA filter on a region starting at (2, 3, 4): same segments, same region");

    // Rotation changes the segments (the parameter reaches the library).
    const auto rotated = Parcellate(labels.GetPointer(), -1, 60.0);
    Expect(CountDifferent(rotated.GetPointer(), segments.GetPointer()) > 0, "RotationDegrees reaches the library");

    // An explicit long axis: the slice normal of the short-axis stack.
    using Filter = itk::ClaimAHASegmentationImageFilter<UCharImage>;
    auto                   filter = Filter::New();
    Filter::VectorType     axis;
    for (unsigned int a = 0; a < 3; ++a)
    {
      axis[a] = labels->GetDirection()(a, 2);
    }
    filter->SetInput(labels);
    filter->SetLongAxis(axis);
    filter->Update();
    Expect(CoversMyocardium(labels.GetPointer(), filter->GetOutput()), "AHA filter with an explicit LongAxis");
  }

  // With RV and rotation, through converted buffers (double in, long out).
  {
    const auto reference = Read<UCharImage>(work + "/ref_phantom_rv_rot30.nii.gz");
    const auto asDouble = Cast<DoubleImage>(phantom.GetPointer());
    const auto segments = Parcellate<DoubleImage, LongImage>(asDouble.GetPointer(), 5, 30.0);
    const std::size_t different = CountDifferent(segments.GetPointer(), reference.GetPointer());
    Expect(different == 0, "AHA filter double -> long (converted buffers), RV, 30 degrees equals "
                           "`claim aha --rv 5 --rotation 30` (" +
                             std::to_string(different) + " differ)");
    Expect(SameGeometry(segments.GetPointer(), phantom.GetPointer()), "converted AHA output keeps the geometry");
  }

  // A label the scheme does not name (the RV without SetRVLabel).
  {
    using Filter = itk::ClaimAHASegmentationImageFilter<UCharImage>;
    auto filter = Filter::New();
    filter->SetInput(phantom);
    std::string detail;
    const bool refused = ThrowsClaimStatus(filter, "CLAIM_ERR_INVALID_ARGUMENT", detail);
    Expect(refused, "unnamed label -> itk::ClaimExceptionObject with the claim status: " + detail);
    std::ostringstream printed;
    filter->Print(printed);
    Expect(printed.str().find("RotationDegrees") != std::string::npos, "AHA PrintSelf");
  }
}

void
CheckSegmentation(const FloatImage * image, const UCharImage * truth, const std::string & work)
{
  using Filter = itk::ClaimScarSegmentationImageFilter<FloatImage>;
  auto filter = Filter::New();
  filter->SetInput(image);
  filter->SetRVLabel(5);
  ProgressLog log;
  log.Attach(filter);
  const auto start = std::chrono::steady_clock::now();
  filter->Update();
  const double seconds = Seconds(start);
  const UCharImage * labels = filter->GetOutput();

  const auto        reference = Read<UCharImage>(work + "/ref_segment.nii.gz");
  const std::size_t different = CountDifferent(labels, reference.GetPointer());
  Expect(different == 0, "segmentation filter equals `claim segment --model builtin --labels emidec-rv` (" +
                           std::to_string(different) + " differ, " + std::to_string(seconds) + " s)");
  std::size_t both = 0, found = 0, expected = 0;
  itk::ImageRegionConstIterator<UCharImage> f(labels, labels->GetLargestPossibleRegion());
  itk::ImageRegionConstIterator<UCharImage> t(truth, truth->GetLargestPossibleRegion());
  for (; !f.IsAtEnd(); ++f, ++t)
  {
    found += f.Get() == 2;
    expected += t.Get() == 2;
    both += f.Get() == 2 && t.Get() == 2;
  }
  const double dice = 2.0 * static_cast<double>(both) / static_cast<double>(std::max<std::size_t>(found + expected, 1));
  Expect(found > 0 && dice > 0.7, "segmentation finds the phantom's myocardium (" + std::to_string(found) +
                                    " voxels, Dice " + std::to_string(dice) + ")");
  Expect(SameGeometry(labels, image), "segmentation output keeps the oblique geometry exactly");
  Expect(log.Good(true), "segmentation progress: intermediate reports, ending at 1 (" + log.Describe() + ")");

  // The model stays loaded while the path is unchanged.
  const claim_segmenter * loaded = filter->GetModel() != nullptr ? filter->GetModel()->get() : nullptr;
  filter->SetStepSize(1.0f);
  filter->Update();
  Expect(loaded != nullptr && filter->GetModel() != nullptr && filter->GetModel()->get() == loaded,
         "segmenter cached across updates (parameters changed, path not)");

  std::string detail;
  const bool aborted = AbortsThroughProgress(filter, detail);
  Expect(aborted, "segmentation aborted from a progress observer: " + detail);
  filter->Modified();
  filter->Update();
  Expect(filter->GetModel() != nullptr && filter->GetModel()->get() == loaded &&
           SameGeometry(filter->GetOutput(), image),
         "segmentation runs again after an abort, same model");

  filter->SetModelPath(work + "/no-such-model");
  const bool missing = ThrowsClaimStatus(filter, "CLAIM_ERR_IO", detail);
  Expect(missing, "missing segmenter -> itk::ClaimExceptionObject with the claim status: " + detail);
  Expect(filter->GetModel() == nullptr, "failed load leaves no model cached");
  filter->SetModelPath("builtin");
  filter->Update();
  Expect(filter->GetModel() != nullptr && SameGeometry(filter->GetOutput(), image),
         "a new path loads again (back to \"builtin\")");

  std::ostringstream printed;
  filter->Print(printed);
  Expect(printed.str().find("ModelPath") != std::string::npos, "segmentation PrintSelf");
}

void
CheckSynthesis(const FloatImage * image, const UCharImage * labels, const std::string & work)
{
  using Filter = itk::ClaimScarSynthesisImageFilter<FloatImage, UCharImage>;
  auto filter = Filter::New();
  filter->SetInput(image);
  filter->SetLabelInput(labels);
  filter->SetRVLabel(5);
  filter->SetTStart(20);
  filter->SetJumpLength(1);
  filter->SetJumpNSample(1);
  filter->SetSeed(7);
  ProgressLog log;
  log.Attach(filter);
  const auto start = std::chrono::steady_clock::now();
  filter->Update();
  const double       seconds = Seconds(start);
  const FloatImage * out = filter->GetOutput();

  std::size_t lesionChanged = 0, otherChanged = 0;
  itk::ImageRegionConstIterator<FloatImage> a(image, image->GetLargestPossibleRegion());
  itk::ImageRegionConstIterator<FloatImage> b(out, out->GetLargestPossibleRegion());
  itk::ImageRegionConstIterator<UCharImage> l(labels, labels->GetLargestPossibleRegion());
  for (; !a.IsAtEnd(); ++a, ++b, ++l)
  {
    const bool lesion = l.Get() == 3 || l.Get() == 4;
    const bool changed = a.Get() != b.Get();
    lesionChanged += lesion && changed;
    otherChanged += !lesion && changed;
  }
  Expect(lesionChanged > 0 && otherChanged == 0,
         "synthesis changes only lesion voxels (" + std::to_string(lesionChanged) + " changed, " +
           std::to_string(otherChanged) + " outside; 20/1/1 in " + std::to_string(seconds) + " s)");
  Expect(SameGeometry(out, image), "synthesis output keeps the oblique geometry exactly");
  Expect(log.Good(true), "synthesis progress: intermediate reports, ending at 1 (" + log.Describe() + ")");

  // The same synthesis into an int16 image: through a float buffer, rounded.
  using ShortFilter = itk::ClaimScarSynthesisImageFilter<FloatImage, UCharImage, ShortImage>;
  auto shortFilter = ShortFilter::New();
  shortFilter->SetInput(image);
  shortFilter->SetLabelInput(labels);
  shortFilter->SetRVLabel(5);
  shortFilter->SetTStart(20);
  shortFilter->SetJumpLength(1);
  shortFilter->SetJumpNSample(1);
  shortFilter->SetSeed(7);
  shortFilter->Update();
  const auto rounded = Map<ShortImage>(out, [](float v) { return std::round(v); });
  Expect(CountDifferent(shortFilter->GetOutput(), rounded.GetPointer()) == 0 &&
           SameGeometry(shortFilter->GetOutput(), image),
         "synthesis float -> int16 output: the float result rounded, same geometry");

  std::string detail;
  const bool aborted = AbortsThroughProgress(filter, detail);
  Expect(aborted, "synthesis aborted from a progress observer: " + detail);

  // A label map on another grid is refused before claim is called.
  const auto moved = Cast<UCharImage>(labels);
  UCharImage::PointType origin = labels->GetOrigin();
  origin[0] += 10.0;
  moved->SetOrigin(origin);
  filter->SetLabelInput(moved);
  bool refused = false;
  try
  {
    filter->Update();
  }
  catch (const itk::ExceptionObject &)
  {
    refused = true;
  }
  Expect(refused, "synthesis refuses a label map on another grid");
  filter->SetLabelInput(labels);

  filter->SetModelPath(work + "/no-such-model.safetensors");
  const bool missing = ThrowsClaimStatus(filter, "CLAIM_ERR_IO", detail);
  Expect(missing, "missing diffusion model -> itk::ClaimExceptionObject with the claim status: " + detail);
  Expect(filter->GetModel() == nullptr, "failed load leaves no model cached");

  std::ostringstream printed;
  filter->Print(printed);
  Expect(printed.str().find("JumpNSample") != std::string::npos, "synthesis PrintSelf");
}

int
Check(const std::string & phantomDir, const std::string & work)
{
  std::cout << "libclaim " << claim::version() << " (ABI " << (claim::abi_version() >> 16) << "."
            << (claim::abi_version() & 0xffffu) << ")\n";
  const auto image = Read<FloatImage>(phantomDir + "/image.nii.gz");
  const auto labels = Read<UCharImage>(phantomDir + "/labels.nii.gz");
  CheckGeometryMapping(image.GetPointer());
  CheckAHA(phantomDir, work);
  CheckSegmentation(image.GetPointer(), labels.GetPointer(), work);
  CheckSynthesis(image.GetPointer(), labels.GetPointer(), work);
  return 0;
}

} // namespace

int
main(int argc, char * argv[])
{
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((mode == "prepare" && argc == 5) || (mode == "check" && argc == 4)))
  {
    std::cerr << "usage: " << argv[0] << " prepare ATLAS_DIR PHANTOM_DIR WORK\n"
              << "       " << argv[0] << " check PHANTOM_DIR WORK\n";
    return 2;
  }
  // A stray exception is a failure with its message, not a terminate().
  try
  {
    if (mode == "prepare")
    {
      return Prepare(argv[2], argv[3], argv[4]);
    }
    Check(argv[2], argv[3]);
  }
  catch (const itk::ExceptionObject & e)
  {
    ++failures;
    std::cout << "FAIL unexpected " << e.GetNameOfClass() << ": " << e.GetDescription() << "\n";
  }
  catch (const std::exception & e)
  {
    ++failures;
    std::cout << "FAIL unexpected exception: " << e.what() << "\n";
  }
  std::cout << checks << " checks, " << failures << " failed\n";
  return failures == 0 ? 0 : 1;
}
