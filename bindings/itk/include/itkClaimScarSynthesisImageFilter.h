// itkClaimScarSynthesisImageFilter.h: scar synthesis in LGE images with a
// CLAIM / LeFusion diffusion model (claim_diffusion_synthesize) as an ITK
// filter.
#ifndef itkClaimScarSynthesisImageFilter_h
#define itkClaimScarSynthesisImageFilter_h

#include "itkClaimImageFilterBase.h"

#include "itkImage.h"

#include <cstdint>
#include <string>
#include <vector>

namespace itk
{

/** \class ClaimScarSynthesisImageFilter
 * \brief Paints realistic scar intensities into an LGE image inside the
 * scar and MVO labels of a label map, with RePaint sampling of a CLAIM or
 * LeFusion denoiser (claim_diffusion_synthesize).
 *
 * Inputs:
 * - SetInput(): the LGE image, 3-D, any scalar pixel type, finite values;
 * - SetLabelInput(): the label map on the same grid (same regions, origin,
 *   spacing and direction, checked by VerifyInputInformation), any scalar
 *   pixel type with integral values in the filter's label scheme (see
 *   ClaimImageFilterBase; set RVLabel when the map has an RV). It must
 *   hold scar or MVO.
 *
 * Output: TOutputImage (default: the input image type; float, or the
 * input's own pixel type, avoid conversions): a copy of the image whose
 * scar and MVO voxels are synthesized (with KeepNetworkOutput off, the
 * default, every other voxel is copied bit for bit). Integer outputs are
 * rounded and clamped to the pixel type. Origin, spacing, direction and
 * regions are the input image's.
 *
 * Model: ModelPath (default "builtin", the phantom model shipped inside
 * the library; otherwise a .safetensors checkpoint) on Device
 * (CLAIM_DEVICE_CPU, the default, or CLAIM_DEVICE_CUDA) and DeviceIndex.
 * The model is loaded on the first Update() (or LoadModel()) and kept
 * inside the filter; it is loaded again only when the path or the device
 * changes.
 *
 * Sampling (claim_synthesis_params; the defaults are the library's, i.e.
 * CLAIM's inference setting): TStart (RePaint's t_T, 1-300, default 300),
 * JumpLength (5), JumpNSample (5), Seed (0: the same seed, inputs and
 * parameters give the same image), BatchSize (items per network batch, 0 =
 * automatic: 4 on the CPU, from free memory on a GPU),
 * CropSize (in-plane window on the LV cavity, 72), GuidanceScale
 * (classifier-free guidance, 1 = off), Frames (0 = the model's layout),
 * KeepNetworkOutput (off), PerturbHistogram (on), Histogram (empty = the
 * layout's preset; else the model's whole condition, 16 values per
 * channel). 300/5/5 runs 1480 network evaluations per batch; 20/1/1 runs 20.
 *
 * Progress: one step per network evaluation (claim_progress_fn); setting
 * AbortGenerateData (e.g. from a ProgressEvent observer) cancels within one
 * evaluation and Update() throws itk::ProcessAborted.
 *
 * Buffers: see itkClaimImageBridge.h. Image and label map are passed
 * without a copy when their pixel types are uint8, int16, uint16, int32 or
 * float (otherwise converted to int32 or float); the output is written in
 * place when its pixel type is float or the image's own (native) type,
 * otherwise through a float buffer.
 */
template <typename TInputImage, typename TLabelImage, typename TOutputImage = TInputImage>
class ClaimScarSynthesisImageFilter : public ClaimImageFilterBase<TInputImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ClaimScarSynthesisImageFilter);

  using Self = ClaimScarSynthesisImageFilter;
  using Superclass = ClaimImageFilterBase<TInputImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  using InputImageType = TInputImage;
  using LabelImageType = TLabelImage;
  using OutputImageType = TOutputImage;
  using HistogramType = std::vector<float>;

  static_assert(TLabelImage::ImageDimension == 3, "Claim filters work on 3-D images");

  itkNewMacro(Self);
  itkTypeMacro(ClaimScarSynthesisImageFilter, ClaimImageFilterBase);

  /** The label map (second input, required). */
  itkSetInputMacro(LabelInput, TLabelImage);
  itkGetInputMacro(LabelInput, TLabelImage);

  /** Denoiser weights: "builtin" (default) or a .safetensors file. */
  itkSetStringMacro(ModelPath);
  itkGetStringMacro(ModelPath);
  /** CLAIM_DEVICE_CPU (default) or CLAIM_DEVICE_CUDA. */
  itkSetMacro(Device, claim_device);
  itkGetConstMacro(Device, claim_device);
  /** GPU index for CLAIM_DEVICE_CUDA (default 0). */
  itkSetMacro(DeviceIndex, std::int32_t);
  itkGetConstMacro(DeviceIndex, std::int32_t);

  itkSetMacro(TStart, std::uint32_t);
  itkGetConstMacro(TStart, std::uint32_t);
  itkSetMacro(JumpLength, std::uint32_t);
  itkGetConstMacro(JumpLength, std::uint32_t);
  itkSetMacro(JumpNSample, std::uint32_t);
  itkGetConstMacro(JumpNSample, std::uint32_t);
  itkSetMacro(Seed, std::uint64_t);
  itkGetConstMacro(Seed, std::uint64_t);
  itkSetMacro(BatchSize, std::uint32_t);
  itkGetConstMacro(BatchSize, std::uint32_t);
  itkSetMacro(CropSize, std::uint32_t);
  itkGetConstMacro(CropSize, std::uint32_t);
  itkSetMacro(GuidanceScale, double);
  itkGetConstMacro(GuidanceScale, double);
  itkSetMacro(Frames, std::uint32_t);
  itkGetConstMacro(Frames, std::uint32_t);
  itkSetMacro(KeepNetworkOutput, bool);
  itkGetConstMacro(KeepNetworkOutput, bool);
  itkBooleanMacro(KeepNetworkOutput);
  itkSetMacro(PerturbHistogram, bool);
  itkGetConstMacro(PerturbHistogram, bool);
  itkBooleanMacro(PerturbHistogram);

  /** The histogram condition (16 values per model channel); empty (the
   * default) uses the layout's preset. */
  void
  SetHistogram(const HistogramType & histogram)
  {
    if (histogram != m_Histogram)
    {
      m_Histogram = histogram;
      this->Modified();
    }
  }
  const HistogramType &
  GetHistogram() const
  {
    return m_Histogram;
  }

  /** Loads the model now unless the one loaded has the same path and
   * device (Update() calls it). Throws itk::ClaimExceptionObject. */
  void
  LoadModel()
  {
    this->LoadCachedModel(
      m_Model,
      m_LoadedKey,
      this->ModelKey(),
      [this] { return claim::DiffusionModel::load(m_ModelPath, ClaimLoadOptions(m_Device, m_DeviceIndex)); },
      "claim_diffusion_load");
  }

  /** The model loaded and cached by this filter, or nullptr before the
   * first load (or after a failed one). */
  const claim::DiffusionModel *
  GetModel() const
  {
    return m_Model ? &m_Model : nullptr;
  }

protected:
  ClaimScarSynthesisImageFilter()
  {
    this->AddRequiredInputName("LabelInput");
    const claim::SynthesisParams defaults;
    const claim_synthesis_params & p = defaults.c();
    m_TStart = p.t_start;
    m_JumpLength = p.jump_length;
    m_JumpNSample = p.jump_n_sample;
    m_Seed = p.seed;
    m_BatchSize = p.batch_size;
    m_CropSize = p.crop_size;
    m_GuidanceScale = p.guidance_scale;
    m_Frames = p.frames;
    m_KeepNetworkOutput = p.keep_network_output != 0;
    m_PerturbHistogram = p.perturb_histogram != 0;
  }
  ~ClaimScarSynthesisImageFilter() override = default;

  void
  GenerateData() override
  {
    this->CheckLibraryVersion();
    this->LoadModel();
    this->AllocateOutputs();
    this->UpdateProgress(0.0f);

    using ImageVolume = ClaimInputVolume<TInputImage>;
    using OutputPixelType = typename TOutputImage::PixelType;
    const ImageVolume                     image(this->GetInput());
    const ClaimInputVolume<TLabelImage>   labels(this->GetLabelInput());
    // claim writes the image's voxel type or float; anything else goes
    // through a float buffer.
    constexpr bool direct =
      ClaimVoxelTraits<OutputPixelType>::IsNative &&
      (std::is_same<OutputPixelType, typename ImageVolume::StorageType>::value || std::is_same<OutputPixelType, float>::value);
    ClaimOutputVolume<TOutputImage, float> output(this->GetOutput(), direct);

    const claim_label_scheme scheme = this->GetLabelScheme();
    claim::SynthesisParams   params;
    params.jumps(m_TStart, m_JumpLength, m_JumpNSample)
      .seed(m_Seed)
      .batch_size(m_BatchSize)
      .crop_size(m_CropSize)
      .guidance(m_GuidanceScale)
      .frames(m_Frames)
      .keep_network_output(m_KeepNetworkOutput)
      .perturb_histogram(m_PerturbHistogram)
      .labels(scheme);
    try
    {
      if (!m_Histogram.empty())
      {
        params.histogram(m_Histogram);
      }
      claim::diffusion_synthesize(m_Model, image.Get(), labels.Get(), params, output.Get(), this->MakeProgressCallback());
    }
    catch (const claim::Error & error)
    {
      this->ThrowClaimError(error, "claim_diffusion_synthesize");
    }
    output.Commit();
    this->UpdateProgress(1.0f);
  }

  void
  PrintSelf(std::ostream & os, Indent indent) const override
  {
    Superclass::PrintSelf(os, indent);
    os << indent << "ModelPath: " << m_ModelPath << std::endl;
    os << indent << "Device: " << m_Device << " (index " << m_DeviceIndex << ")" << std::endl;
    os << indent << "Model loaded: " << (m_Model ? "yes" : "no") << std::endl;
    os << indent << "TStart / JumpLength / JumpNSample: " << m_TStart << " / " << m_JumpLength << " / "
       << m_JumpNSample << std::endl;
    os << indent << "Seed: " << m_Seed << std::endl;
    os << indent << "BatchSize: " << m_BatchSize << std::endl;
    os << indent << "CropSize: " << m_CropSize << std::endl;
    os << indent << "GuidanceScale: " << m_GuidanceScale << std::endl;
    os << indent << "Frames: " << m_Frames << std::endl;
    os << indent << "KeepNetworkOutput: " << m_KeepNetworkOutput << std::endl;
    os << indent << "PerturbHistogram: " << m_PerturbHistogram << std::endl;
    os << indent << "Histogram: ";
    if (m_Histogram.empty())
    {
      os << "preset" << std::endl;
    }
    else
    {
      os << m_Histogram.size() << " values" << std::endl;
    }
  }

private:
  std::string
  ModelKey() const
  {
    return m_ModelPath + '\n' + std::to_string(m_Device) + ':' + std::to_string(m_DeviceIndex);
  }

  std::string   m_ModelPath{ "builtin" };
  claim_device  m_Device{ CLAIM_DEVICE_CPU };
  std::int32_t  m_DeviceIndex{ 0 };
  std::uint32_t m_TStart{};
  std::uint32_t m_JumpLength{};
  std::uint32_t m_JumpNSample{};
  std::uint64_t m_Seed{};
  std::uint32_t m_BatchSize{};
  std::uint32_t m_CropSize{};
  double        m_GuidanceScale{ 1.0 };
  std::uint32_t m_Frames{};
  bool          m_KeepNetworkOutput{ false };
  bool          m_PerturbHistogram{ true };
  HistogramType m_Histogram;

  claim::DiffusionModel m_Model;
  std::string           m_LoadedKey;
};

} // end namespace itk

#endif // itkClaimScarSynthesisImageFilter_h
