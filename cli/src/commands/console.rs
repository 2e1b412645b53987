//! `console`: the web console's address for a campaign, opened in a browser.

use serde_json::json;

use super::Failure;
use crate::args::Output;
use crate::connect::Client;
use crate::render;

/// The console's address: `/console/` of the controller, or the page of
/// one campaign.
pub fn console_url(controller: &str, campaign_id: Option<&str>) -> String {
    let base = controller.trim_end_matches('/');
    match campaign_id {
        Some(id) => format!(
            "{base}/console/campaigns/{}",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        ),
        None => format!("{base}/console/"),
    }
}

/// `muster console`: the address, after checking who you are there (and,
/// signing in with AWS, a token for the sign-in page).
pub async fn console(
    client: &mut Client,
    target: &crate::connect::Target,
    args: &crate::args::ConsoleArgs,
    output: Output,
) -> Result<(), Failure> {
    let me = client.who_am_i(muster_proto::v1::WhoAmIRequest {}).await?.into_inner();
    if let Some(id) = &args.campaign_id {
        // A wrong id is said here, not by the page.
        client
            .get_campaign(muster_proto::v1::GetCampaignRequest {
                campaign_id: id.clone(),
                view: muster_proto::v1::CampaignView::Basic as i32,
            })
            .await?;
    }
    let url = console_url(&target.url, args.campaign_id.as_deref());
    let token = match &target.aws_signin {
        Some(server_id) => Some(
            crate::signin::AwsSigner::load(server_id)
                .await
                .and_then(|signer| signer.token())
                .map_err(|e| Failure::Input(e.to_string()))?,
        ),
        None => None,
    };
    match output {
        // Not one of the API's messages: named as the proto3 JSON mapping
        // would name them.
        Output::Json | Output::Yaml => render::print_document(
            &json!({
                "url": url,
                "name": me.name,
                "signinToken": token,
            }),
            output,
        ),
        _ => {
            println!("{url}");
            match token {
                Some(token) => {
                    eprintln!("sign in there as {} with this token (valid five minutes):", me.name);
                    println!("{token}");
                }
                None => eprintln!(
                    "sign in there as {} with your API token (the one --token-file names) or your client certificate",
                    me.name
                ),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::console_url;

    #[test]
    fn the_console_is_under_the_controllers_address() {
        assert_eq!(
            console_url("https://muster.example:7070", None),
            "https://muster.example:7070/console/"
        );
        assert_eq!(
            console_url("https://muster.example:7070/", Some("4f1c-9a")),
            "https://muster.example:7070/console/campaigns/4f1c-9a"
        );
    }
}
