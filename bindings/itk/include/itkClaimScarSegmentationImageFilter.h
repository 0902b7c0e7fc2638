// itkClaimScarSegmentationImageFilter.h: LV cavity, myocardium, scar and
// MVO segmentation of LGE images with an nnU-Net model run by libclaim
// (claim_segmenter_segment, no Python) as an ITK filter.
#ifndef itkClaimScarSegmentationImageFilter_h
#define itkClaimScarSegmentationImageFilter_h

#include "itkClaimImageFilterBase.h"

#include "itkImage.h"

#include <cstdint>
#include <string>
#include <vector>

namespace itk
{

/** \class ClaimScarSegmentationImageFilter
 * \brief Segments LV cavity, myocardium, scar and MVO in an LGE image the
 * way nnU-Net's predictor does (crop, normalise, resample to the plans'
 * spacing, Gaussian-weighted sliding window, test-time mirroring, fold
 * ensemble, back to the input grid, argmax, optional post-processing),
 * with claim_segmenter_segment.
 *
 * Input (SetInput): the LGE image, 3-D, one channel, any scalar pixel
 * type, finite values. Its spacing is what the model resamples from, so
 * the geometry must be the image's real one.
 *
 * Output: the label map, TOutputImage (default uint8), written with the
 * filter's label values (ClaimImageFilterBase: LVCavityLabel 1,
 * MyocardiumLabel 2, ScarLabel 3, MVOLabel 4 by default; set RVLabel, e.g.
 * 5, to get a model's RV class under that value), matched to the model's
 * classes by their dataset.json names; 0 is background. Origin, spacing,
 * direction and regions are the input's.
 *
 * Model: ModelPath (default "builtin", the small 2-D phantom segmenter
 * shipped inside the library; otherwise an nnU-Net v2 results folder, a
 * checkpoint_final.pth or a safetensors bundle from `claim import`), Folds
 * (empty, the default: every numbered fold; CLAIM_FOLD_ALL for fold_all),
 * Configuration ("" = the checkpoints' own), Device (CLAIM_DEVICE_CPU or
 * CLAIM_DEVICE_CUDA) and DeviceIndex. The model is loaded on the first
 * Update() (or LoadModel()) and kept inside the filter; it is loaded again
 * only when one of these changes.
 *
 * Prediction: StepSize (sliding-window step as a fraction of the patch, in
 * (0, 1], default 0.5), Mirroring (test-time mirroring, on), Postprocess
 * (scar and MVO only where they touch myocardium, MVO only inside scar, on).
 *
 * Progress: one step per network evaluation (windows x mirror passes x
 * folds); setting AbortGenerateData cancels within one evaluation and
 * Update() throws itk::ProcessAborted.
 *
 * Buffers: see itkClaimImageBridge.h. The image is passed without a copy
 * when its pixel type is uint8, int16, uint16, int32 or float (otherwise
 * converted to int32 or float); the output is written in place when its
 * pixel type is one of those, otherwise through a uint8 buffer.
 */
template <typename TInputImage, typename TOutputImage = Image<std::uint8_t, TInputImage::ImageDimension>>
class ClaimScarSegmentationImageFilter : public ClaimImageFilterBase<TInputImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ClaimScarSegmentationImageFilter);

  using Self = ClaimScarSegmentationImageFilter;
  using Superclass = ClaimImageFilterBase<TInputImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  using InputImageType = TInputImage;
  using OutputImageType = TOutputImage;
  using FoldsType = std::vector<std::int32_t>;

  itkNewMacro(Self);
  itkTypeMacro(ClaimScarSegmentationImageFilter, ClaimImageFilterBase);

  /** nnU-Net model: "builtin" (default), a results folder, a checkpoint or a bundle. */
  itkSetStringMacro(ModelPath);
  itkGetStringMacro(ModelPath);
  /** Plans configuration, e.g. "2d"; "" (default) = the checkpoints' own. */
  itkSetStringMacro(Configuration);
  itkGetStringMacro(Configuration);
  /** CLAIM_DEVICE_CPU (default) or CLAIM_DEVICE_CUDA. */
  itkSetMacro(Device, claim_device);
  itkGetConstMacro(Device, claim_device);
  /** GPU index for CLAIM_DEVICE_CUDA (default 0). */
  itkSetMacro(DeviceIndex, std::int32_t);
  itkGetConstMacro(DeviceIndex, std::int32_t);

  itkSetMacro(StepSize, float);
  itkGetConstMacro(StepSize, float);
  itkSetMacro(Mirroring, bool);
  itkGetConstMacro(Mirroring, bool);
  itkBooleanMacro(Mirroring);
  itkSetMacro(Postprocess, bool);
  itkGetConstMacro(Postprocess, bool);
  itkBooleanMacro(Postprocess);

  /** Folds to ensemble (at most 16; CLAIM_FOLD_ALL for fold_all); empty
   * (the default) = every numbered fold present. */
  void
  SetFolds(const FoldsType & folds)
  {
    if (folds != m_Folds)
    {
      m_Folds = folds;
      this->Modified();
    }
  }
  const FoldsType &
  GetFolds() const
  {
    return m_Folds;
  }

  /** Loads the model now unless the one loaded has the same path, folds,
   * configuration and device (Update() calls it). Throws
   * itk::ClaimExceptionObject. */
  void
  LoadModel()
  {
    this->LoadCachedModel(
      m_Model,
      m_LoadedKey,
      this->ModelKey(),
      [this] {
        claim::SegmenterOptions options;
        options.folds(m_Folds).configuration(m_Configuration);
        return claim::Segmenter::load(m_ModelPath, options, ClaimLoadOptions(m_Device, m_DeviceIndex));
      },
      "claim_segmenter_load");
  }

  /** The segmenter loaded and cached by this filter, or nullptr before the
   * first load (or after a failed one). */
  const claim::Segmenter *
  GetModel() const
  {
    return m_Model ? &m_Model : nullptr;
  }

protected:
  ClaimScarSegmentationImageFilter()
  {
    const claim::SegmentationParams defaults;
    m_StepSize = defaults.c().step_size;
    m_Mirroring = defaults.c().mirroring != 0;
    m_Postprocess = defaults.c().postprocess != 0;
  }
  ~ClaimScarSegmentationImageFilter() override = default;

  void
  GenerateData() override
  {
    this->CheckLibraryVersion();
    this->LoadModel();
    this->AllocateOutputs();
    this->UpdateProgress(0.0f);

    const ClaimInputVolume<TInputImage>               image(this->GetInput());
    ClaimOutputVolume<TOutputImage, std::uint8_t>     labels(this->GetOutput(), true);
    claim::SegmentationParams                         params;
    params.mirroring(m_Mirroring).step_size(m_StepSize).postprocess(m_Postprocess).labels(this->GetLabelScheme());
    try
    {
      claim::segmenter_segment(m_Model, image.Get(), params, labels.Get(), this->MakeProgressCallback());
    }
    catch (const claim::Error & error)
    {
      this->ThrowClaimError(error, "claim_segmenter_segment");
    }
    labels.Commit();
    this->UpdateProgress(1.0f);
  }

  void
  PrintSelf(std::ostream & os, Indent indent) const override
  {
    Superclass::PrintSelf(os, indent);
    os << indent << "ModelPath: " << m_ModelPath << std::endl;
    os << indent << "Configuration: " << (m_Configuration.empty() ? "(the checkpoints')" : m_Configuration)
       << std::endl;
    os << indent << "Folds:";
    if (m_Folds.empty())
    {
      os << " every numbered fold";
    }
    for (const std::int32_t fold : m_Folds)
    {
      os << ' ' << fold;
    }
    os << std::endl;
    os << indent << "Device: " << m_Device << " (index " << m_DeviceIndex << ")" << std::endl;
    os << indent << "Model loaded: " << (m_Model ? "yes" : "no") << std::endl;
    os << indent << "StepSize: " << m_StepSize << std::endl;
    os << indent << "Mirroring: " << m_Mirroring << std::endl;
    os << indent << "Postprocess: " << m_Postprocess << std::endl;
  }

private:
  std::string
  ModelKey() const
  {
    std::string key = m_ModelPath + '\n' + m_Configuration + '\n' + std::to_string(m_Device) + ':' +
                      std::to_string(m_DeviceIndex) + '\n';
    for (const std::int32_t fold : m_Folds)
    {
      key += std::to_string(fold) + ',';
    }
    return key;
  }

  std::string  m_ModelPath{ "builtin" };
  std::string  m_Configuration;
  claim_device m_Device{ CLAIM_DEVICE_CPU };
  std::int32_t m_DeviceIndex{ 0 };
  FoldsType    m_Folds;
  float        m_StepSize{ 0.5f };
  bool         m_Mirroring{ true };
  bool         m_Postprocess{ true };

  claim::Segmenter m_Model;
  std::string      m_LoadedKey;
};

} // end namespace itk

#endif // itkClaimScarSegmentationImageFilter_h
