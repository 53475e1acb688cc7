"""MLPerf Tiny anomaly detection reference: fully connected autoencoder (640 -> 640).

After mlcommons/tiny, benchmark/training/anomaly_detection/keras_model.py (Hitachi's DCASE
2020 task 2 baseline): Dense 128 - BN - ReLU x4, Dense 8 - BN - ReLU (the bottleneck),
Dense 128 - BN - ReLU x4, Dense 640 (linear). The input is 5 consecutive 128-band log-mel
frames; the anomaly score of a sample is its mean squared reconstruction error, judged by the
area under the ROC curve. 268k trainable parameters.
"""

import keras

from models.registry import register

L = keras.layers


@register("fc_autoencoder", (640,), None, task="anomaly",
          real_data="ToyADMOS / DCASE 2020 task 2 machine sounds, 5 frames x 128 log-mel bands: x_train: float32 "
                    "(N, 640) normal sounds (rows whose y_train is not 0 are left out of training), x_test, y_test: "
                    "int (N,) 1 = anomalous",
          reference="MLPerf Tiny anomaly detection: FC autoencoder (DCASE 2020 task 2 baseline)")
def build(input_shape=(640,)) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="log_mel")
    x = inputs
    for index, units in enumerate((128, 128, 128, 128, 8, 128, 128, 128, 128)):
        x = L.Dense(units, name=f"dense{index}")(x)
        x = L.Activation("relu", name=f"relu{index}")(L.BatchNormalization(name=f"bn{index}")(x))
    outputs = L.Dense(input_shape[-1], name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="fc_autoencoder")
