/*
 * FrameFusionPrune TensorRT plugin (IPluginV3, namespace "ffexport", version "1"): one static
 * FrameFusion prune step. See README.md for the inputs, outputs and attributes.
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

struct PruneAttributes
{
    int64_t keep{0};
};

class FrameFusionPrunePlugin : public FrameFusionPluginBase<FrameFusionPrunePlugin, PruneAttributes>
{
public:
    static constexpr char const* kName = "FrameFusionPrune";
    static constexpr int32_t kInputs = 1;  // importance [n]
    static constexpr int32_t kOutputs = 1; // kept [K]
    static constexpr char const* kInputNames = "importance";
    using Attributes = PruneAttributes;
    static constexpr std::array<IntAttribute<PruneAttributes>, 1> kFields{{{"keep", &PruneAttributes::keep}}};

    using FrameFusionPluginBase::FrameFusionPluginBase;

    //! validatePruneAttributes ("" when fine), for the creator.
    static std::string validateAttributes(PruneAttributes const& attributes);

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
    friend class FrameFusionPluginBase<FrameFusionPrunePlugin, PruneAttributes>; // onShapeChange calls check
    //! validatePrune for `importance` dims [n] of TensorRT type `type` ("" when fine).
    std::string check(nvinfer1::Dims const& importance, nvinfer1::DataType type) const;
};

class FrameFusionPrunePluginCreator : public FrameFusionPluginCreatorBase<FrameFusionPrunePlugin>
{
};

} // namespace plugin
} // namespace ffexport
