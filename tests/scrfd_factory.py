"""Small ONNX files with SCRFD's input/output signature (insightface's detector), for the loading path.

One 1x1 convolution per stride (8, 16, 32) maps the image to the 2-anchor score, box and keypoint maps;
the score bias decides whether anything is detected.
"""

import numpy as np


def write_scrfd(path, score_bias=-10.0, box_distance=2.0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outputs = [], [], []
    heads = (("score", 1, score_bias, True), ("bbox", 4, box_distance, False), ("kps", 10, 0.0, False))
    for head, width, bias, sigmoid in heads:
        for stride in (8, 16, 32):
            name = f"{head}_{stride}"
            channels = 2 * width
            inits += [numpy_helper.from_array(np.zeros((channels, 3, 1, 1), np.float32), f"{name}_w"),
                      numpy_helper.from_array(np.full(channels, bias, np.float32), f"{name}_b"),
                      numpy_helper.from_array(np.array([-1, width], np.int64), f"{name}_shape")]
            nodes += [helper.make_node("Conv", ["input.1", f"{name}_w", f"{name}_b"], [f"{name}_conv"],
                                       strides=[stride, stride]),
                      helper.make_node("Transpose", [f"{name}_conv"], [f"{name}_t"], perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [f"{name}_t", f"{name}_shape"], [f"{name}_r" if sigmoid else name])]
            if sigmoid:
                nodes.append(helper.make_node("Sigmoid", [f"{name}_r"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", width]))
    graph = helper.make_graph(nodes, "scrfd_like",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
