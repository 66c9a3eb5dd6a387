"""Three engines behind one contract (`base.Engine`): keras_fit, tf_loop, torch_loop."""
