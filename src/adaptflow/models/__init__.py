"""Network building blocks: MLP encoder/decoder now; timm backbones, heads and RBMs later."""
