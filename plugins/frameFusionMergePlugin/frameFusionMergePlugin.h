/*
 * FrameFusionMerge TensorRT plugin (IPluginV3, namespace "ffexport", version "1"): one static
 * FrameFusion merge step. See README.md for the inputs, outputs and attributes.
 */
#pragma once

#include "frameFusionPluginBase.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>

namespace ffexport
{
namespace plugin
{

struct MergeAttributes
{
    int64_t remove{0};
    int64_t patchesPerFrame{0};
    int64_t maxRun{0};
};

class FrameFusionMergePlugin : public FrameFusionPluginBase<FrameFusionMergePlugin, MergeAttributes>
{
public:
    static constexpr char const* kName = "FrameFusionMerge";
    static constexpr int32_t kInputs = 2;  // visual [n, D], patch_ids [n]
    static constexpr int32_t kOutputs = 2; // kept [n - M], values [n - M, D]
    static constexpr char const* kInputNames = "visual, patch_ids";
    using Attributes = MergeAttributes;
    static constexpr std::array<IntAttribute<MergeAttributes>, 3> kFields{{{"remove", &MergeAttributes::remove},
        {"patches_per_frame", &MergeAttributes::patchesPerFrame}, {"max_run", &MergeAttributes::maxRun}}};

    using FrameFusionPluginBase::FrameFusionPluginBase;

    //! validateMergeAttributes ("" when fine), for the creator.
    static std::string validateAttributes(MergeAttributes const& attributes);

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    friend class FrameFusionPluginBase<FrameFusionMergePlugin, MergeAttributes>; // onShapeChange calls check
    //! validateMerge for `visual` dims [n, d] of TensorRT type `type` ("" when fine).
    std::string check(nvinfer1::Dims const& visual, nvinfer1::DataType type) const;
};

class FrameFusionMergePluginCreator : public FrameFusionPluginCreatorBase<FrameFusionMergePlugin>
{
};

} // namespace plugin
} // namespace ffexport
