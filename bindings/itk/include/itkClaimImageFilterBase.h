// itkClaimImageFilterBase.h: what the Claim filters share: the label
// scheme, whole-image regions, progress and abort, and claim errors as ITK
// exceptions.
#ifndef itkClaimImageFilterBase_h
#define itkClaimImageFilterBase_h

#include "itkClaimImageBridge.h"

#include "itkImageToImageFilter.h"

#include <cstdint>
#include <string>

namespace itk
{

/** \class ClaimImageFilterBase
 * \brief Base of the filters over the claim C API (not used on its own).
 *
 * - Regions: the C API works on whole volumes, so every input is requested
 *   over its largest possible region and the output is always generated
 *   over its largest possible region (streaming does not split the work).
 * - Geometry: the output's origin, spacing, direction and regions are
 *   those of the primary input (ImageToImageFilter's default), and the
 *   inputs must occupy the same physical space (VerifyInputInformation).
 * - Labels: LVCavityLabel, MyocardiumLabel, ScarLabel, MVOLabel and
 *   RVLabel (-1: no RV) describe the label maps a filter reads or writes;
 *   the defaults are EMIDEC's (1, 2, 3, 4, no RV). Labels are positive
 *   and distinct.
 * - Progress: the claim_progress_fn of long calls drives UpdateProgress()
 *   (done / total, ending at 1); the callback returns non-zero when
 *   GetAbortGenerateData() is set, claim cancels, and GenerateData() throws
 *   itk::ProcessAborted. An exception thrown by a ProgressEvent observer
 *   also cancels the call and is rethrown unchanged.
 * - Errors: a failed claim_* call throws itk::ClaimExceptionObject (an
 *   itk::ExceptionObject) naming the call, claim_status_str() of the status
 *   and claim_last_error_message().
 */
template <typename TInputImage, typename TOutputImage>
class ClaimImageFilterBase : public ImageToImageFilter<TInputImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ClaimImageFilterBase);

  using Self = ClaimImageFilterBase;
  using Superclass = ImageToImageFilter<TInputImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  itkTypeMacro(ClaimImageFilterBase, ImageToImageFilter);

  static_assert(TInputImage::ImageDimension == 3 && TOutputImage::ImageDimension == 3,
                "Claim filters work on 3-D images");

  /** LV blood pool label (default 1). */
  itkSetMacro(LVCavityLabel, std::int32_t);
  itkGetConstMacro(LVCavityLabel, std::int32_t);
  /** Healthy myocardium label (default 2). */
  itkSetMacro(MyocardiumLabel, std::int32_t);
  itkGetConstMacro(MyocardiumLabel, std::int32_t);
  /** Scar label (default 3). */
  itkSetMacro(ScarLabel, std::int32_t);
  itkGetConstMacro(ScarLabel, std::int32_t);
  /** Microvascular obstruction label (default 4). */
  itkSetMacro(MVOLabel, std::int32_t);
  itkGetConstMacro(MVOLabel, std::int32_t);
  /** RV blood pool label, or -1 (the default) for a map without RV. */
  itkSetMacro(RVLabel, std::int32_t);
  itkGetConstMacro(RVLabel, std::int32_t);

  /** The labels above as a claim_label_scheme. */
  claim_label_scheme
  GetLabelScheme() const
  {
    claim_label_scheme scheme = claim::default_label_scheme();
    scheme.lv_cavity = m_LVCavityLabel;
    scheme.myocardium = m_MyocardiumLabel;
    scheme.scar = m_ScarLabel;
    scheme.mvo = m_MVOLabel;
    scheme.rv = m_RVLabel;
    return scheme;
  }

protected:
  ClaimImageFilterBase()
  {
    const claim_label_scheme scheme = claim::default_label_scheme();
    m_LVCavityLabel = scheme.lv_cavity;
    m_MyocardiumLabel = scheme.myocardium;
    m_ScarLabel = scheme.scar;
    m_MVOLabel = scheme.mvo;
    m_RVLabel = scheme.rv;
  }
  ~ClaimImageFilterBase() override = default;

  /** Every input, whole. */
  void
  GenerateInputRequestedRegion() override
  {
    Superclass::GenerateInputRequestedRegion();
    for (const auto & name : this->GetInputNames())
    {
      DataObject * input = this->ProcessObject::GetInput(name);
      if (input != nullptr)
      {
        input->SetRequestedRegionToLargestPossibleRegion();
      }
    }
  }

  /** The output is always produced whole. */
  void
  EnlargeOutputRequestedRegion(DataObject * output) override
  {
    Superclass::EnlargeOutputRequestedRegion(output);
    if (output != nullptr)
    {
      output->SetRequestedRegionToLargestPossibleRegion();
    }
  }

  /** Throws unless the loaded libclaim serves the claim.h compiled in. */
  void
  CheckLibraryVersion() const
  {
    if (!claim::abi_compatible())
    {
      const std::uint32_t abi = claim_abi_version();
      itkExceptionMacro(<< "libclaim ABI " << (abi >> 16) << "." << (abi & 0xffffu) << " cannot serve claim.h ABI "
                        << CLAIM_ABI_VERSION_MAJOR << "." << CLAIM_ABI_VERSION_MINOR);
    }
  }

  /** The progress callback of long claim calls: UpdateProgress(done /
   * total); false (cancel) once AbortGenerateData is set. */
  claim::Progress
  MakeProgressCallback()
  {
    return [this](std::uint64_t done, std::uint64_t total) -> bool {
      if (total > 0)
      {
        const double fraction = static_cast<double>(done) / static_cast<double>(total);
        this->UpdateProgress(static_cast<float>(fraction > 1.0 ? 1.0 : fraction));
      }
      return !this->GetAbortGenerateData();
    };
  }

  /** The model cache of the filters that load one: returns at once when
   * `model` is loaded and was loaded for `key`; otherwise drops it, calls
   * `load()` (which returns the new model) and records `key`. A failed load
   * leaves no model and no key, so the next Update() tries again; its error
   * is thrown by ThrowClaimError naming `call`. */
  template <typename TModel, typename TLoad>
  void
  LoadCachedModel(TModel & model, std::string & loadedKey, const std::string & key, TLoad && load, const char * call)
  {
    if (model && key == loadedKey)
    {
      return;
    }
    model = TModel();
    loadedKey.clear();
    try
    {
      model = load();
    }
    catch (const claim::Error & error)
    {
      this->ThrowClaimError(error, call);
    }
    loadedKey = key;
  }

  /** Rethrows a failed claim call `call` as ITK expects it:
   * itk::ProcessAborted when cancelled on request, else
   * itk::ClaimExceptionObject. */
  [[noreturn]] void
  ThrowClaimError(const claim::Error & error, const char * call) const
  {
    if (error.status() == CLAIM_ERR_CANCELLED && this->GetAbortGenerateData())
    {
      ProcessAborted aborted(__FILE__, __LINE__);
      aborted.SetLocation(this->GetNameOfClass());
      aborted.SetDescription(std::string("Filter execution was aborted by an external request (") + call +
                             " cancelled)");
      throw aborted;
    }
    throw ClaimExceptionObject(__FILE__, __LINE__, error.status(), call, error.what(), this->GetNameOfClass());
  }

  void
  PrintSelf(std::ostream & os, Indent indent) const override
  {
    Superclass::PrintSelf(os, indent);
    os << indent << "LVCavityLabel: " << m_LVCavityLabel << std::endl;
    os << indent << "MyocardiumLabel: " << m_MyocardiumLabel << std::endl;
    os << indent << "ScarLabel: " << m_ScarLabel << std::endl;
    os << indent << "MVOLabel: " << m_MVOLabel << std::endl;
    os << indent << "RVLabel: " << m_RVLabel << std::endl;
  }

private:
  std::int32_t m_LVCavityLabel{ 1 };
  std::int32_t m_MyocardiumLabel{ 2 };
  std::int32_t m_ScarLabel{ 3 };
  std::int32_t m_MVOLabel{ 4 };
  std::int32_t m_RVLabel{ -1 };
};

/** The load options of a model filter: device and index. */
inline claim_load_options
ClaimLoadOptions(claim_device device, std::int32_t deviceIndex)
{
  claim_load_options options = claim::default_load_options();
  options.device = device;
  options.device_index = deviceIndex;
  return options;
}

} // end namespace itk

#endif // itkClaimImageFilterBase_h
