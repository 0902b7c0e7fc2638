// scar_app.cxx: segments an LGE image with claim's nnU-Net-compatible
// segmenter and parcellates the result into AHA segments, as ITK filters.
//
//   scar_app image.nii.gz labels.nii.gz segments.nii.gz
#include "itkClaimAHASegmentationImageFilter.h"
#include "itkClaimScarSegmentationImageFilter.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include <iostream>

int main(int argc, char * argv[])
{
  if (argc != 4) { std::cerr << "usage: scar_app image labels segments\n"; return 2; }
  using ImageType = itk::Image<float, 3>;
  using LabelType = itk::Image<unsigned char, 3>;
  try
  {
    // readme:begin
    auto reader = itk::ImageFileReader<ImageType>::New();
    reader->SetFileName(argv[1]);

    auto segmenter = itk::ClaimScarSegmentationImageFilter<ImageType, LabelType>::New();
    segmenter->SetInput(reader->GetOutput());
    segmenter->SetModelPath("builtin");   // or an nnU-Net results folder
    segmenter->SetRVLabel(5);             // write the model's RV class as 5
    segmenter->AddObserver(itk::ProgressEvent(), [&](const itk::EventObject &) {
      std::cout << "\rsegmenting " << int(100 * segmenter->GetProgress()) << " %" << std::flush;
    });

    auto aha = itk::ClaimAHASegmentationImageFilter<LabelType>::New();
    aha->SetInput(segmenter->GetOutput());
    aha->SetRVLabel(5);                   // septum from the RV

    auto labelWriter = itk::ImageFileWriter<LabelType>::New();
    labelWriter->SetInput(segmenter->GetOutput());
    labelWriter->SetFileName(argv[2]);
    labelWriter->Update();
    auto segmentWriter = itk::ImageFileWriter<LabelType>::New();
    segmentWriter->SetInput(aha->GetOutput());
    segmentWriter->SetFileName(argv[3]);
    segmentWriter->Update();
    // readme:end
    std::cout << "\nwrote " << argv[2] << " and " << argv[3] << "\n";
  }
  catch (const itk::ExceptionObject & e)   // claim failures included
  {
    std::cerr << "\n" << e.GetDescription() << "\n";
    return 1;
  }
  return 0;
}
