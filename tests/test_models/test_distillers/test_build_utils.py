"""The loss configs of a term config (term_loss_cfgs)."""
from visionkd.models.distillers.terms.build_utils import term_loss_cfgs


def test_term_loss_cfgs_names_dicts_and_list_items():
    mse = dict(type='FeatureMSELoss', loss_weight=2.0)
    kl = dict(type='KLDivergence', tau=4.0)
    term = dict(student='neck', teacher='neck', weight=0.5,
                connector=dict(type='ConvConnector'),
                loss=mse, loss_extra=[kl, mse], loss_none=None)
    assert list(term_loss_cfgs(term)) == [
        ('loss', mse), ('loss_extra.0', kl), ('loss_extra.1', mse)]


def test_term_loss_cfgs_of_a_one_item_list_is_the_key():
    kl = dict(type='KLDivergence')
    assert list(term_loss_cfgs(dict(loss=[kl]))) == [('loss', kl)]
    assert list(term_loss_cfgs(dict(student='x'))) == []
